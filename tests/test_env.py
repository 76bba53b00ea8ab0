"""`rvm env`: the report a bug report starts with. Run as a user would (the installed script, from a folder of
their own, without the test suite's environment), and once with a backend package made unimportable."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from rvm import formats, machine
from rvm.commands import env

RVM = Path(sys.executable).parent / "rvm"
SECTIONS = ("rvm-toolkit", "Python", "System", "CPU", "PyTorch", "Packages", "Node.js and Chromium", "GPUs",
            "Formats", "Environment")


def user_env():
    return {k: v for k, v in os.environ.items() if k not in ("RVM_VALIDATION_CLIP", "RVM_CHECKPOINT_DIR")}


def rvm_env(tmp_path, *flags):
    done = subprocess.run([str(RVM), "env", *flags], cwd=tmp_path, env=user_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_json_report(tmp_path):
    report = json.loads(rvm_env(tmp_path, "--json"))  # stdout is JSON and nothing else
    assert set(report["formats"]) == set(formats.FORMATS)
    for name, status in report["formats"].items():
        assert isinstance(status["export"], bool) and isinstance(status["runtime"], bool), name
        # a format that cannot export or run says why
        assert status["export"] or status["export_reason"], name
        assert status["runtime"] or status["runtime_reason"], name
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(report["cpu"]["flags"], list)
    assert "node" in report and "version" in report["node"]
    for name in machine.package_names():
        assert "version" in report["packages"][name], name
    assert report["rvm_toolkit"]["version"] == env.__version__
    assert "RVM_CHECKPOINT_DIR" not in report["environment"]


def test_text_report_has_every_section(tmp_path):
    text = rvm_env(tmp_path)
    lines = text.splitlines()
    for section in SECTIONS:
        assert any(line.startswith(section) for line in lines), section
    for name in formats.FORMATS:
        assert any(line.strip().startswith(name + " ") for line in lines), name
    assert torch.__version__ in text


def test_a_missing_package_is_reported_with_its_extra(tmp_path):
    """Block one module an extra brings (the first such of the registry, chosen generically) the way an absent
    package looks to Python: every format that needs it says so, naming the pip extra."""
    base = {"torch", "numpy"}
    entry = next(e for e in formats.FORMATS.values() if e.extra and any(m not in base for m in e.requires))
    module = next(m for m in entry.requires if m not in base)
    script = (f"import sys, json\nsys.modules[{module!r}] = None  # import raises, find_spec answers None\n"
              "from rvm.commands.env import collect\nprint(json.dumps(collect(), default=str))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=user_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    status = report["formats"][entry.name]
    assert status["export"] is False
    assert f'pip install "rvm-toolkit[{entry.extra}]"' in status["export_reason"]
    assert repr(module) in status["export_reason"]
    assert report["packages"][module] == {"installed": False, "version": "not installed"}
    for other in formats.FORMATS.values():  # the others that need it too, each with its own extra
        if module in other.requires:
            assert report["formats"][other.name]["export"] is False, other.name
        if module in other.runtime_requires:
            assert report["formats"][other.name]["runtime"] is False, other.name


def test_a_failing_probe_shows_as_unknown_and_the_rest_still_run(monkeypatch):
    def broken():
        raise OSError("no /proc here")
    monkeypatch.setattr(env, "PROBES", [("cpu", broken), ("python", env.python), ("formats", env.format_statuses)])
    report = env.collect()
    assert report["cpu"] == {"unknown": "OSError: no /proc here"}
    assert report["python"]["version"]
    text = env.to_text(report)
    assert "unknown (OSError: no /proc here)" in text
    assert all(name in text for name in formats.FORMATS)

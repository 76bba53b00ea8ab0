"""Installed as a wheel: the wheel built from this checkout, installed into a venv outside it, and the `rvm` it
installs run from an empty folder as a user would (no $RVM_VALIDATION_CLIP, no $RVM_CHECKPOINT_DIR, no checkout).

What a wheel cannot carry, the npm packages of the TF.js runner and of the web page, is reported as one line
naming the exact `npm ci --prefix <installed folder>` to run; the tests run that very command and then the same
verb works.

How the venv gets the heavy dependencies without the network: torch, onnx, tensorflow... cannot be downloaded in
an offline test, and the issue allows installing "offline from the wheels already present". The new venv is
created bare, and one `.pth` file in its site-packages lists the site-packages folders of the interpreter running
the tests (the dev venv) as plain paths: Python appends them to sys.path after the venv's own site-packages, and
does not process the `.pth` files inside them, so the dev venv's editable hook that points `rvm` at this checkout
is never installed. The wheel then goes in with `pip install --no-index --no-deps` (the dev venv's pip, seen
through that path; pip installs into the venv it runs in and leaves the dev venv's rvm-toolkit alone, "outside
environment"), and every test checks that `rvm` is imported from the venv's site-packages, never from here.

The wheel is built from a copy of the files git ships (tracked and untracked-not-ignored), because setuptools
writes build/ and *.egg-info into the folder it builds, and nothing may be written into the repository.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest

from rvm.errors import BackendUnavailable, MissingNodePackages, UsageError
from rvm.web import site as web

from .conftest import CLIPS, DGF_WEIGHTS, need

REPO = Path(__file__).resolve().parents[1]
NPM_COMMAND = re.compile(r"`(npm ci --prefix [^`]+)`")
slow = pytest.mark.slow


def dev_site_packages():
    """The folders the dev venv's packages come from (its own site-packages and any it layers on)."""
    return [path for path in dict.fromkeys(sys.path)
            if Path(path).name in ("site-packages", "dist-packages") and Path(path).is_dir()]


def user_env(**changes) -> dict:
    """The environment of a user's shell: none of the development settings the Makefile and conftest export."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RVM_VALIDATION_CLIP", "RVM_CHECKPOINT_DIR", "PYTHONPATH", "VIRTUAL_ENV",
                        "TFDF_DISABLE_WELCOME_MESSAGE")}
    # npm: from its cache when it has the packages, no audit/funding requests (the command itself is unchanged)
    env.update(npm_config_prefer_offline="true", npm_config_audit="false", npm_config_fund="false",
               npm_config_update_notifier="false", **changes)
    return env


def run(command, cwd, **env_changes) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=user_env(**env_changes), capture_output=True,
                          text=True, timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's refusal: exit 2 and one `rvm: error:` line, the last on stderr (log lines may come before)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("rvm: error: ") and sum(line.startswith("rvm: error") for line in lines) == 1, lines
    return lines[-1]


def npm_ci(message: str, folder: Path, cwd: Path) -> None:
    """Run the install command the message names, exactly as written, after checking it targets `folder`."""
    found = NPM_COMMAND.search(message)
    assert found, message
    command = shlex.split(found.group(1))
    assert Path(command[-1]).resolve() == folder.resolve(), (command, folder)
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH: the install command the message names cannot be run here")
    result = run(command, cwd)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheel, install it into a fresh venv outside the repository; the venv is removed after."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("the wheel is built from the files git ships: needs git and a checkout")
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "source", root / "dist", root / "venv"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():  # a deleted, not yet committed file is still listed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("rvm_toolkit-*.whl")

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz_dev_site_packages.pth").write_text("".join(f"{p}\n" for p in dev_site_packages()))
    result = run([python, "-m", "pip", "install", "--no-index", "--no-deps", "-q", wheel], root)
    assert result.returncode == 0, result.stderr[-3000:]
    yield SimpleNamespace(wheel=wheel, python=python, rvm=venv / "bin" / "rvm", package=purelib / "rvm")
    shutil.rmtree(root, ignore_errors=True)  # the npm packages installed into it weigh ~700 MB


@pytest.fixture
def workdir(tmp_path):
    """An empty folder holding only a user's own inputs: a checkpoint and a clip, passed by relative path."""
    folder = tmp_path / "user"
    folder.mkdir()
    shutil.copyfile(need(DGF_WEIGHTS), folder / "weights.pth")
    shutil.copyfile(need(CLIPS / "person_a.mp4"), folder / "clip.mp4")
    return folder


def export(installed, workdir, fmt: str) -> subprocess.CompletedProcess:
    return run([installed.rvm, "export", "--format", fmt, "--checkpoint", "weights.pth", "--validation-clip",
                "clip.mp4", "-o", "exports"], workdir)


@slow
def test_wheel_holds_the_package_and_its_data_only(installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    for name in ("rvm/__init__.py", "rvm/commands/cli.py", "rvm/media/samples.py", "rvm/measure/bench.py",
                 "rvm/batch/driver.py", "rvm/web/site.py", "rvm/data/person.jpg", "rvm/data/README.md",
                 "rvm/exporters/__init__.py", "rvm/exporters/onnx.py",
                 "rvm/runtimes/__init__.py", "rvm/runtimes/tfjs.py", "rvm/model/network.py",
                 "rvm/models/manifest.json", "rvm/web/page/index.html", "rvm/web/page/app.js", "rvm/web/page/style.css",
                 "rvm/web/page/package.json", "rvm/web/page/package-lock.json", "rvm/runtimes/tfjs_runner/runner.js",
                 "rvm/runtimes/tfjs_runner/package.json", "rvm/runtimes/tfjs_runner/package-lock.json"):
        assert name in names, name
    top = {name.split("/")[0] for name in names} - {"rvm"}
    assert len(top) == 1 and top.pop().endswith(".dist-info"), top  # no tests/, parity_tests/, exporters/ ...
    assert not [name for name in names if "node_modules" in name or "/tests/" in name or "__pycache__" in name]


@slow
def test_rvm_is_imported_from_the_installed_wheel(installed, tmp_path):
    code = "import rvm, rvm.commands.cli, rvm.exporters, rvm.runtimes, rvm.models, rvm.web.site; print(rvm.__file__)"
    result = run([installed.python, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    location = Path(result.stdout.strip()).resolve()
    assert location == (installed.package / "__init__.py").resolve()
    assert REPO not in location.parents


@slow
def test_onnx_export_convert_and_web_from_an_empty_folder(installed, workdir):
    if find_spec("onnx") is None or find_spec("onnxruntime") is None:
        pytest.skip("the [onnx] extra is not installed in the dev venv")
    result = export(installed, workdir, "onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    artifact = workdir / "exports" / "rvm_mobilenetv3_fp32.onnx"
    assert artifact.is_file() and "validated onnx fp32" in result.stderr

    result = run([installed.rvm, "convert", "--model", "exports/rvm_mobilenetv3_fp32.onnx", "--input-source",
                  "clip.mp4", "--output-alpha", "pha.mp4", "--disable-progress"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "pha.mp4").stat().st_size > 0

    webapp = installed.package / "web" / "page"
    line = error_line(run([installed.rvm, "web", "exports/rvm_mobilenetv3_fp32.onnx", "-o", "site"], workdir))
    assert "page's engines" in line and "npm ci --prefix" in line, line
    assert not (workdir / "site").exists()
    npm_ci(line, webapp, workdir)
    result = run([installed.rvm, "web", "exports/rvm_mobilenetv3_fp32.onnx", "-o", "site"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    site = workdir / "site"
    assert (site / "index.html").is_file() and (site / "vendor" / "ort.wasm.min.js").is_file()
    assert (site / "models" / "rvm_mobilenetv3_fp32.onnx").is_file() and (site / "models.json").is_file()


@slow
def test_tfjs_export_and_convert_from_an_empty_folder(installed, workdir, tmp_path):
    if find_spec("tensorflowjs") is None:
        pytest.skip("the [tfjs] extra is not installed in the dev venv")
    runner = installed.package / "runtimes" / "tfjs_runner"
    # the artifact is Python's to write: the export succeeds and says what to install to run (and validate) it
    result = export(installed, workdir, "tfjs")
    assert result.returncode == 0, result.stderr[-3000:]
    artifact = workdir / "exports" / "rvm_mobilenetv3_tfjs_mixed"
    assert (artifact / "model.json").is_file()
    (warning,) = [line for line in result.stderr.splitlines() if "not run after export" in line]
    assert warning.startswith("WARNING ") and f"npm ci --prefix {runner}" in warning, warning

    frames = workdir / "frames"  # 8 frames: TF.js in Node takes ~0.4 s a frame on a busy 2-core machine
    frames.mkdir()
    for png in sorted(need(CLIPS / "person_a_png").glob("*.png"))[:8]:
        shutil.copyfile(png, frames / png.name)
    convert = [installed.rvm, "convert", "--model", "exports/rvm_mobilenetv3_tfjs_mixed", "--input-source",
               "frames", "--output-alpha", "pha.mp4", "--disable-progress"]
    no_node = tmp_path / "empty-bin"
    no_node.mkdir()
    line = error_line(run(convert, workdir, PATH=str(no_node)))
    assert "needs Node.js: install Node.js 18+" in line, line
    if shutil.which("node") is None:
        pytest.skip("Node.js is not on PATH: the TF.js runner cannot be installed and run here")
    line = error_line(run(convert, workdir))
    assert "TF.js runtime's Node runner needs npm packages" in line, line
    assert not (workdir / "pha.mp4").exists()
    npm_ci(line, runner, workdir)
    result = run(convert, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "pha.mp4").stat().st_size > 0


def test_missing_npm_packages_name_the_command(monkeypatch, tmp_path):
    """Without the page's engines, `rvm web` says the one command that installs them where they are looked for."""
    folder = tmp_path / "site packages" / "rvm" / "web" / "page"  # a space: the path is quoted for the shell
    monkeypatch.setattr(web, "WEBAPP_DIR", folder)
    monkeypatch.setattr(web, "MODULES", folder / "node_modules")
    with pytest.raises(MissingNodePackages) as error:
        web.vendor_files(["onnx"])
    message = str(error.value)
    assert isinstance(error.value, BackendUnavailable) and isinstance(error.value, UsageError)  # exit 2
    assert "\n" not in message and "onnxruntime-web/dist/ort.wasm.min.js is missing" in message
    assert shlex.split(NPM_COMMAND.search(message).group(1)) == ["npm", "ci", "--prefix", str(folder)]

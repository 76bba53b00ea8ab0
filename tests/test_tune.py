"""`rvm tune` and `--model auto`, run as a user runs them: the installed `rvm` from a folder of their own, records in
their cache folder (XDG_CACHE_HOME, a fresh one here), no RVM_VALIDATION_CLIP (candidates are proven on the sample
scene). Checkpoints and the official download come from RVM_CHECKPOINT_DIR, as in a cache the user already filled.

One small tune (ONNX fp32 and int8, 320x192) is the module's fixture; a changed fingerprint (a kernel setting the
fingerprint keys on) then makes `Runtime.load("auto", ...)` refuse (it only reads records) and `rvm convert --model
auto` tune again, repeating the same tune.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvm import formats, tuning
from rvm.measure import tune as tuner
from rvm.targets import OFFICIAL

from .conftest import run_as_user as run
from .conftest import user_env

pytest.importorskip("onnxruntime", reason="the tune tests use ONNX candidates: pip install 'rvm-toolkit[onnx]'")
pytestmark = pytest.mark.slow

SIZE, RATIO = (320, 192), 0.5  # the size and ratio of the suite's one tune (`tuned_user` in conftest)


@pytest.fixture
def user(tuned_user):
    return tuned_user


def record_of(done) -> dict:
    path = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("record: "))
    return json.loads(Path(path).read_text()) | {"path": path}


def test_tune_writes_record_table_and_plot(user):
    folder, cache, env, done, _ = user
    record = record_of(done)
    assert Path(record["path"]).is_relative_to(cache / "rvm" / "tune")
    assert record["resolution"] == list(SIZE) and record["downsample_ratio"] == RATIO
    assert record["fingerprint"]["cpu"] and record["fingerprint"]["packages"]["onnxruntime"]
    assert record["key"] == tuning.fingerprint_key(record["fingerprint"])
    rows = {(r["name"], r["precision"]): r for r in record["candidates"]}
    ours = [rows[("onnx static", p)] for p in ("fp32", "int8")]
    official = rows[(OFFICIAL.name, "fp32")]
    for row in ours:  # proven on the sample scene within the registered bounds, benched beside the others
        assert row["status"] == "ok", row
        bounds = formats.get("onnx").tolerance(row["precision"], scene=True)
        assert bounds.mad is None or row["mad"] <= bounds.mad
        assert row["fps"] > 0 and row["ratio_to_pytorch"] > 0 and row["ratio_to_official"] > 0
        assert len(row["repeat_fps"]) == 2
    assert rows[("onnx static", "fp32")]["quality"] == "exact" and rows[("onnx static", "fp32")]["mad"] < 0.01
    # int8 is `fast` unless it happens to stay within the exact class's MAD
    assert rows[("onnx static", "int8")]["quality"] == ("exact" if ours[1]["mad"] <= tuning.EXACT_MAD else "fast")
    assert official["peer"] and official["fps"] and official["ratio_to_official"] == pytest.approx(1.0)
    fast, exact = record["choice"]["fast"], record["choice"]["exact"]
    assert fast["fps"] == max(r["fps"] for r in ours) and exact["name"] == "onnx static"
    assert fast["fps"] >= exact["fps"]
    for chosen in (fast, exact):  # kept beside the record; the rest deleted
        artifact = Path(chosen["artifact"])
        assert artifact.is_file() and artifact.parent == Path(record["path"]).with_suffix("")
    # the killed tune's work is removed, the running one's kept, and this tune left none of its own
    assert user[4] == [f".320x192_r0.5_cpu-pid{os.getpid()}-x"]
    assert "| onnx static | int8 | ok |" in done.stdout and "auto:fast:" in done.stdout
    with Image.open(folder / "speed.png") as plot, Image.open(Path(record["path"]).with_suffix(".png")) as kept:
        assert plot.size == kept.size == tuner.PLOT_SIZE
        assert len(np.unique(np.asarray(plot.convert("L")))) > 2  # something was drawn


def test_show_lists_the_record_as_this_machines(user):
    folder, cache, env, done, _ = user
    shown = run(folder, env, "tune", "--show").stdout
    assert record_of(done)["path"] in shown and "(this machine;" in shown


def test_convert_model_auto_uses_the_record(user):
    folder, cache, env, done, _ = user
    record = record_of(done)
    for spec, quality in (("auto", "fast"), ("auto:exact", "exact")):
        converted = run(folder, env, "convert", "--model", spec, "--input-source", str(clip()), "--input-resize",
                        "320", "192", "--downsample-ratio", "0.5", "--output-alpha", f"{quality}.mp4",
                        "--disable-progress")
        assert record["choice"][quality]["artifact"] in converted.stderr  # the log names the artifact it runs
        assert (folder / f"{quality}.mp4").stat().st_size > 0
    assert "tuning now" not in converted.stderr


def test_batch_model_auto_uses_the_record_for_one_size(user, tmp_path):
    folder, cache, env, done, _ = user
    record = record_of(done)
    from tests.conftest import CLIPS, need
    a, b, narrow = (need(CLIPS / f"person_{name}.mp4") for name in ("a", "b", "narrow"))
    batch = run(folder, env, "batch", str(a), str(b), "-o", str(tmp_path / "out"), "--model", "auto",
                "--input-resize", "320", "192", "--downsample-ratio", "0.5", "--outputs", "alpha")
    assert record["choice"]["fast"]["artifact"] in batch.stderr
    assert (tmp_path / "out" / "person_a.alpha.mp4").is_file() and (tmp_path / "out" / "person_b.alpha.mp4").is_file()
    # one batch runs one model: inputs of two sizes cannot share the artifact chosen for one
    mixed = run(folder, env, "batch", str(a), str(narrow), "-o", str(tmp_path / "mixed"), "--model", "auto",
                expect=2)
    assert "2 sizes" in mixed.stderr and len(mixed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mixed").exists() or not any((tmp_path / "mixed").iterdir())


def test_runtime_load_auto_reads_the_record_and_the_cli_retunes_on_changed_fingerprint(user, tmp_path):
    folder, cache, env, done, _ = user
    record = record_of(done)
    script = ("import json, sys\nfrom rvm import tuning\nfrom rvm.runtimes import load\n"
              "r = load(sys.argv[1], resolution=(320, 192), downsample_ratio=0.5)\n"
              "key = tuning.fingerprint_key(tuning.fingerprint())\n"
              "print(json.dumps({'path': str(r.info.path), 'key': key,\n"
              "                  'record': str(tuning.record_path(key, (320, 192), 0.5, 'cpu'))}))\n")

    def load_auto(spec, environment):
        return subprocess.run([sys.executable, "-c", script, spec], cwd=folder, env=environment, capture_output=True,
                              text=True, timeout=900)
    same = load_auto("auto", env)
    assert same.returncode == 0, same.stderr[-2000:]
    assert json.loads(same.stdout)["path"] == record["choice"]["fast"]["artifact"]
    assert "tuning now" not in same.stderr
    # a kernel setting the fingerprint keys on: the record is another machine's now. Runtime.load only reads
    # records: it names the tune to run, and tunes nothing
    changed_env = user_env(cache, ATEN_CPU_CAPABILITY="avx2")
    refused = load_auto("auto:exact", changed_env)
    assert refused.returncode != 0 and "tuning now" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert "UsageError" in last and "this machine changed since it was tuned" in last
    assert "run `rvm tune --resolution 320x192`" in last
    # the CLI's --model auto tunes on demand, with the same request (ONNX only), and the new record is this
    # fingerprint's
    converted = run(folder, changed_env, "convert", "--model", "auto:exact", "--input-source", str(clip()),
                    "--input-resize", "320", "192", "--downsample-ratio", "0.5", "--output-alpha",
                    str(tmp_path / "retuned.mp4"), "--disable-progress")
    assert "this machine changed since it was tuned" in converted.stderr and "tuning now" in converted.stderr
    assert (tmp_path / "retuned.mp4").stat().st_size > 0
    loaded = load_auto("auto:exact", changed_env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert answer["key"] != record["key"]
    assert Path(answer["record"]).is_relative_to(cache)
    new_record = json.loads(Path(answer["record"]).read_text())
    assert answer["path"] == new_record["choice"]["exact"]["artifact"] and answer["path"] in converted.stderr
    assert {r["format"] for r in new_record["candidates"]} == {"onnx"}, "the re-tune repeats the same request"
    shown = run(folder, env, "tune", "--show").stdout
    assert "another machine or package set" in shown  # from the original fingerprint, the new record is foreign


def test_bad_requests_fail_in_one_line(user, tmp_path):
    folder, cache, env, done, _ = user
    for args, message in ((["tune"], "needs --resolution"),
                          (["tune", "--resolution", "320x192", "--backends", "nope"], "unknown backend"),
                          (["tune", "--resolution", "320x192", "--precisions", "int4"], "unknown precision"),
                          (["tune", "--resolution", "320x192", "--plot", "speed.jpg"], "PNG"),
                          (["convert", "--model", "auto:best", "--input-source", str(clip()), "--output-alpha",
                            "x.mp4"], "quality class")):
        failed = run(tmp_path, env, *args, expect=2)
        assert message in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_auto_needs_a_resolution():
    from rvm.errors import UsageError
    from rvm.runtimes import load
    with pytest.raises(UsageError, match="resolution"):
        load("auto")


def test_runtime_load_auto_without_a_record_names_the_tune_and_tunes_nothing(tmp_path, monkeypatch):
    from rvm.errors import UsageError
    from rvm.runtimes import load
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=r"no tuning record for 96x64: this machine has not been tuned at this size; "
                                         r"run `rvm tune --resolution 96x64`"):
        load("auto", resolution=(96, 64))
    assert not (tmp_path / "rvm").exists() or not list((tmp_path / "rvm").rglob("*.json"))


def clip() -> Path:
    from tests.conftest import CLIPS, need
    return need(CLIPS / "person_b.mp4")

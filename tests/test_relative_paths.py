"""Paths are the user's (issue #20): every verb run as a user runs it, the installed `rvm` script in a folder
outside the repository with only relative paths on its command line, must find its inputs and write its outputs
relative to that folder, whichever process (the TF.js Node runner, the tensorflowjs converter, batch workers,
bench's memory child) ends up using them; and nothing lands in the repository.

RVM_VALIDATION_CLIP and RVM_CHECKPOINT_DIR are removed from the commands' environment, so every clip and checkpoint
comes from the command line. Left out: `rvm batch --ray` (Ray is an optional extra and starting it costs more than
this module's budget; its actors get the same absolute `Job`s that `test_batch_jobs_hold_absolute_paths` checks)
and `rvm web --serve` (serves until Ctrl+C; it resolves its folder itself).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rvm.batch.jobs import BatchRequest, plan_jobs
from rvm.media.request import ConvertRequest
from rvm.runtimes import tfjs as tfjs_runtime

from .conftest import BACKGROUND, CLIPS, WEIGHTS, need

pytestmark = pytest.mark.slow  # minutes on two cores: three exports (TF.js, ONNX, int8), bench and sensitivity

RVM = Path(sys.executable).parent / "rvm"
REPOSITORY = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache"}
ONNX = "exports/rvm_mobilenetv3_fp32.onnx"
INT8 = "exports/rvm_mobilenetv3_int8.onnx"
TFJS = "exports/rvm_mobilenetv3_tfjs_mixed"


def repository_files():
    files = {}
    for folder, dirs, names in os.walk(REPOSITORY):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in names:
            path = Path(folder, name)
            files[str(path.relative_to(REPOSITORY))] = path.lstat().st_mtime_ns
    return files


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The user's folder: the footage, a calibration clip, a background and the weights, copied in."""
    folder = tmp_path_factory.mktemp("user")
    assert REPOSITORY not in folder.resolve().parents
    shutil.copyfile(need(CLIPS / "person_a.mp4"), folder / "clip.mp4")
    shutil.copyfile(need(CLIPS / "person_b.mp4"), folder / "calib.mp4")
    shutil.copyfile(need(BACKGROUND), folder / "bg.jpg")
    shutil.copyfile(need(WEIGHTS / "rvm_mobilenetv3_from_official_onnx.pth"), folder / "weights.pth")
    (folder / "frames").mkdir()  # a short image-sequence input, for the slower runtimes
    for image in sorted(need(CLIPS / "person_a_png").glob("*.png"))[:8]:
        shutil.copyfile(image, folder / "frames" / image.name)
    before = repository_files()
    yield folder
    after = repository_files()
    assert {p: t for p, t in after.items() if before.get(p) != t} == {}, "the commands wrote into the repository"


def rvm(home: Path, *args: str) -> str:
    """`rvm ARGS` in `home`, as a user types it; returns stdout, fails with the command's stderr tail."""
    env = {k: v for k, v in os.environ.items() if k not in ("RVM_VALIDATION_CLIP", "RVM_CHECKPOINT_DIR")}
    env["TFDF_DISABLE_WELCOME_MESSAGE"] = "1"
    done = subprocess.run([str(RVM), *args], cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"rvm {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def need_node_runner():
    try:
        tfjs_runtime.find_node()
    except Exception as error:  # BackendUnavailable: no Node or no `npm ci` in the runner
        pytest.skip(str(error))
    pytest.importorskip("tensorflowjs")


@pytest.fixture(scope="module")
def onnx_model(home) -> str:
    out = rvm(home, "export", "--format", "onnx", "-o", "exports", "--validation-clip", "clip.mp4",
              "--checkpoint", "./weights.pth")
    assert out.splitlines()[-1] == ONNX  # printed as the user would type it
    assert (home / ONNX).is_file()
    return ONNX


@pytest.fixture(scope="module")
def tfjs_model(home) -> str:
    # the reported failure: validation ran the Node runner in its own folder, where exports/.tmp-.../model.json
    # does not exist (exit 1)
    need_node_runner()
    out = rvm(home, "export", "--format", "tfjs", "-o", "exports", "--validation-clip", "clip.mp4",
              "--checkpoint", "./weights.pth")
    assert out.splitlines()[-1] == TFJS
    assert (home / TFJS / "model.json").is_file()
    return TFJS


def test_export_onnx(home, onnx_model):
    assert not list((home / "exports").glob(".tmp-*"))


def test_export_tfjs(home, tfjs_model):
    assert not list((home / "exports").glob(".tmp-*"))


def test_export_int8_with_relative_calibration(home):
    # validation on a relative clip is covered above; this one is about the calibration path
    out = rvm(home, "export", "--format", "onnx", "--precision", "int8", "--calibration", "calib.mp4", "--no-validate",
              "-o", "exports", "--checkpoint", "./weights.pth")
    assert out.splitlines()[-1] == INT8
    assert (home / INT8).is_file()


def test_convert_onnx_and_pytorch(home, onnx_model):
    (home / "out").mkdir(exist_ok=True)
    rvm(home, "convert", "--model", onnx_model, "--input-source", "clip.mp4", "--output-alpha", "out/pha.mp4",
        "--disable-progress")
    rvm(home, "convert", "--checkpoint", "./weights.pth", "--input-source", "frames", "--output-composition",
        "out/com.mp4", "--background", "bg.jpg", "--disable-progress")
    assert (home / "out/pha.mp4").stat().st_size > 0
    assert (home / "out/com.mp4").stat().st_size > 0


def test_convert_tfjs(home, tfjs_model):
    """The Node runner with a relative model folder."""
    (home / "out").mkdir(exist_ok=True)
    rvm(home, "convert", "--model", tfjs_model, "--input-source", "frames", "--output-alpha", "out/tfjs_pha.mp4",
        "--disable-progress")
    assert (home / "out/tfjs_pha.mp4").stat().st_size > 0


def test_batch_inputs(home, onnx_model):
    out = rvm(home, "batch", "clip.mp4", "-o", "batch", "--model", onnx_model, "--outputs", "alpha,composition",
              "--background", "bg.jpg", "--workers", "1", "--disable-progress")
    assert "summary: batch/rvm-batch-summary.json" in out
    assert (home / "batch/clip.alpha.mp4").stat().st_size > 0
    assert (home / "batch/clip.composition.mp4").stat().st_size > 0


def test_batch_manifest(home, onnx_model):
    """Inputs (and a background file) relative to the manifest, outputs relative to -o."""
    jobs = home / "jobs"
    (jobs / "clips").mkdir(parents=True)
    shutil.copyfile(home / "clip.mp4", jobs / "clips/one.mp4")
    shutil.copyfile(home / "bg.jpg", jobs / "backdrop.jpg")
    (jobs / "jobs.csv").write_text("input,alpha,composition,background\n"
                                   "clips/one.mp4,mattes/one.mp4,comps/one.mp4,backdrop.jpg\n")
    rvm(home, "batch", "--manifest", "jobs/jobs.csv", "-o", "manifest-out", "--model", onnx_model, "--workers", "1",
        "--disable-progress")
    assert (home / "manifest-out/mattes/one.mp4").stat().st_size > 0
    assert (home / "manifest-out/comps/one.mp4").stat().st_size > 0


def test_batch_jobs_hold_absolute_paths(home, monkeypatch):
    """What workers get (Ray actors may run in another folder): absolute input, outputs, model and background
    file; a colour stays a colour."""
    monkeypatch.chdir(home)
    (home / "plan").mkdir()
    shutil.copyfile(home / "bg.jpg", home / "plan/backdrop.jpg")
    (home / "plan/jobs.csv").write_text("input,alpha,background\n../clip.mp4,a.mp4,backdrop.jpg\n"
                                        "../calib.mp4,b.mp4,green\n")
    listed, *manifest = plan_jobs(BatchRequest(["clip.mp4"], "o", ConvertRequest(background="bg.jpg", model="m"),
                                               manifest="plan/jobs.csv", outputs=["alpha"]))
    assert Path(listed.options["background"]) == (home / "bg.jpg").resolve()
    assert Path(manifest[0].options["background"]) == (home / "plan/backdrop.jpg").resolve()
    assert manifest[1].options["background"] == "green"
    for job in (listed, *manifest):
        assert Path(job.input).is_absolute() and Path(job.work_dir).is_absolute()
        assert all(Path(p).is_absolute() for p in job.outputs.values())


def test_web(home, onnx_model, tfjs_model):
    out = rvm(home, "web", tfjs_model, onnx_model, "-o", "site")
    assert (home / "site/index.html").is_file()
    assert (home / "site/models/rvm_mobilenetv3_tfjs_mixed/model.json").is_file()
    assert (home / "site/models/rvm_mobilenetv3_fp32.onnx").is_file()
    assert "site" in out


def test_profile(home, onnx_model):
    out = rvm(home, "profile", onnx_model, "--resolution", "320x192", "--frames", "1", "--checkpoint", "./weights.pth")
    assert "frame (wall, median)" in out


def test_parity(home):
    # the reference row alone: the clip and checkpoint paths are what is tested, not another export
    out = rvm(home, "parity", "--backends", "pytorch", "--frames", "2", "--clip", "clip.mp4",
              "--checkpoint", "./weights.pth")
    assert "| pytorch | fp32 | reference | 2 |" in out


def test_bench(home):
    # --memory-frames: the peak-memory child is another process, given the relative checkpoint
    out = rvm(home, "bench", "--backends", "pytorch", "--resolutions", "64x64", "--frames", "1", "--repeats", "1",
              "--e2e-frames", "0", "--memory-frames", "2", "--checkpoint", "./weights.pth")
    assert "Peak memory" in out


def test_sensitivity(home):
    out = rvm(home, "sensitivity", "--calibration", "calib.mp4", "--clip", "clip.mp4", "--frames", "2",
              "--calibration-frames", "1", "--units", "refiner", "--checkpoint", "./weights.pth")
    assert "refiner" in out

"""Shared fixtures and helpers: the read-only material in ../shared (read in place, never copied), the real model,
real frames and PyTorch's outputs on them."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

from rvm import MattingNetwork
from rvm.media.samples import CLIP_ENV, validation_frames

# tensorflow_decision_forests (imported by tensorflowjs) prints a welcome banner through IPython unless told not to
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights"
DGF_WEIGHTS = WEIGHTS / "rvm_mobilenetv3_from_official_onnx.pth"
FGF_WEIGHTS = WEIGHTS / "rvm_mobilenetv3_fgf_from_tfjs.pth"
OFFICIAL_ONNX = WEIGHTS / "rvm_mobilenetv3_fp32.onnx"
GOLDEN = SHARED / "golden"
CLIPS = SHARED / "data" / "clips"
BACKGROUND = SHARED / "data" / "background.jpg"


# validation after export runs on real footage, as a user's would with --validation-clip
if (CLIPS / "person_a.mp4").exists():
    os.environ.setdefault(CLIP_ENV, str(CLIPS / "person_a.mp4"))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared material missing: {path} (tests read ../shared in place)")
    return path


FRAMES = 30  # recurrent frames every format is compared over
RATIO = 0.5  # the ratio export validation uses on those frames


def dgf_model() -> MattingNetwork:
    """The official fp32 weights (deep guided filter); the ONNX they came from has no segmentation head."""
    return real_model("deep_guided_filter", DGF_WEIGHTS)


def fgf_model() -> MattingNetwork:
    """The weights recovered from the official TF.js model (fast guided filter, no segmentation head)."""
    return real_model("fast_guided_filter", FGF_WEIGHTS)


def real_model(refiner: str, weights) -> MattingNetwork:
    model = MattingNetwork("mobilenetv3", refiner).eval()
    missing, unexpected = model.load_state_dict(torch.load(need(weights), map_location="cpu"), strict=False)
    assert not unexpected and all(key.startswith("project_seg.") for key in missing), (missing, unexpected)
    return model


def clip_frames(name: str = "person_a.mp4", count: int = FRAMES) -> List[np.ndarray]:
    """`count` frames of a real clip as float32 NCHW `[1,3,H,W]` in 0..1, upscaled 2x as export validation
    does: at 81x46 px after downsampling the network sees no person and every matte is trivially empty."""
    images = validation_frames(count, need(CLIPS / name))
    assert len(images) == count, f"{name} has fewer than {count} frames"
    return [np.ascontiguousarray(image.transpose(2, 0, 1)[None], np.float32) / 255 for image in images]


@torch.inference_mode()
def pytorch_outputs(model, frames, ratio: float = RATIO) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(fgr, pha) per frame from PyTorch eager fp32, carrying the recurrent state."""
    rec, outputs = [None] * 4, []
    for frame in frames:
        fgr, pha, *rec = model(torch.from_numpy(frame), *rec, downsample_ratio=ratio)
        outputs.append((fgr.numpy(), pha.numpy()))
    return outputs


def max_errors(outputs, reference) -> Tuple[float, float]:
    """(alpha, foreground) max abs error over all frames."""
    pha = max(float(np.abs(np.float32(p) - r[1]).max()) for (_, p), r in zip(outputs, reference))
    fgr = max(float(np.abs(np.float32(f) - r[0]).max()) for (f, _), r in zip(outputs, reference))
    return pha, fgr


# Fixtures of the export and runtime test modules
@pytest.fixture(scope="module")
def model():
    return dgf_model()


@pytest.fixture(scope="module")
def frames():
    return clip_frames()


@pytest.fixture(scope="session")
def stateless_clip():
    """person_a upscaled 2x to the static artifacts' 324x184, 20 frames as the parity suite's stateless run (the
    length the quantized bounds are set against)."""
    return validation_frames(20, need(CLIPS / "person_a.mp4"))


@pytest.fixture(scope="module")
def reference(model, frames):
    outputs = pytorch_outputs(model, frames)
    assert np.mean([pha.mean() for _, pha in outputs]) > 0.05, "the person must be matted, or any export passes"
    return outputs


def browser_or_skip():
    """(playwright's sync_playwright, Debian's chromium) for a browser test module; skips the module without them."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                     "-e '.[test]')")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install chromium`; .ci/run installs it)",
                    allow_module_level=True)
    return playwright.sync_playwright, chromium


# The suite's one small tune (ONNX fp32 and int8 at 320x192, run as a user runs `rvm`: from a folder of their own,
# records in a fresh cache folder, no RVM_VALIDATION_CLIP), checked by tests/test_tune.py and reused by the
# `--model auto` tests of other verbs (live), so the suite tunes once
TUNE = ["tune", "--resolution", "320x192", "--downsample-ratio", "0.5", "--backends", "onnx", "--precisions",
        "fp32,int8", "--frames", "12", "--bench-frames", "4", "--repeats", "2", "--disable-progress"]


def user_env(cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RVM_VALIDATION_CLIP"}
    env.update(XDG_CACHE_HOME=str(cache), **extra)
    return env


def run_as_user(folder: Path, env: dict, *args, expect: int = 0) -> subprocess.CompletedProcess:
    rvm = Path(sys.executable).parent / "rvm"
    done = subprocess.run([str(rvm), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == expect, f"rvm {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def tuned_user(tmp_path_factory):
    """(folder, cache, env, the tune's CompletedProcess, the work folders left in the records folder)."""
    pytest.importorskip("onnxruntime", reason="the tune uses ONNX candidates: pip install 'rvm-toolkit[onnx]'")
    from rvm import tuning
    folder, cache = tmp_path_factory.mktemp("user"), tmp_path_factory.mktemp("cache")
    env = user_env(cache)
    # what a tune killed by a signal leaves (its process gone), and the work of one still running (this process)
    records = cache / "rvm" / "tune" / tuning.fingerprint_key(tuning.fingerprint())
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (int(exited.stdout), os.getpid()):
        (records / f".320x192_r0.5_cpu-pid{pid}-x" / "artifacts").mkdir(parents=True)
    done = run_as_user(folder, env, *TUNE, "--plot", "speed.png")
    left = sorted(p.name for p in records.iterdir() if p.name.startswith("."))
    return folder, cache, env, done, left


@pytest.fixture(scope="session")
def store():
    """The run's artifact store (the root conftest points RVM_ARTIFACT_STORE at a folder of its own): an artifact
    the parity suite or another module exported is taken from it, not exported again. Tests never write into it."""
    from rvm.exporters.store import ArtifactStore
    return ArtifactStore()

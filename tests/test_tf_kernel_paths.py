"""The TF SavedModel and the TF.js graph converted from it, exported and compared with PyTorch under both of
TensorFlow's CPU kernel paths, each in a process of its own (the switch is read once, when TF is imported).

TF runs its oneDNN kernels by default only on CPUs with AVX-512-class features and its default kernels
everywhere else (most laptops, many cloud VMs, ARM); some ops have kernels on one path only (the raw
DepthwiseConv2dNative with dilations has none on the default path). TF_ENABLE_ONEDNN_OPTS=0 or 1 forces
one path on any CPU, so this catches such an op whatever CPU the tests run on.

Run as `python -m tests.test_tf_kernel_paths WEIGHTS CLIP FRAMES BACKENDS` it is the child: the parity rows
of those backends as JSON on stdout's last line.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

from .conftest import CLIPS, DGF_WEIGHTS, need

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FRAMES, RATIO = 4, 0.5  # a few recurrent frames of the clip upscaled 2x: the refiner runs, the matte is real


def tfjs_runs_here() -> bool:
    from rvm.runtimes.tfjs import RUNNER_DIR
    return (importlib.util.find_spec("tensorflowjs") is not None and shutil.which("node") is not None
            and (RUNNER_DIR / "node_modules" / "@tensorflow" / "tfjs").is_dir())


def run_child(onednn: str, backends) -> Tuple[dict, str]:
    """The child's answer and the tail of its log (which explains a failed row)."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TFDF_DISABLE_WELCOME_MESSAGE": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.test_tf_kernel_paths", str(need(DGF_WEIGHTS)),
                           str(need(CLIPS / "person_a.mp4")), str(FRAMES), ",".join(backends)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr[-2000:]


@pytest.mark.parametrize("onednn", ["0", "1"], ids=["default-kernels", "onednn-kernels"])
def test_tf_and_tfjs_match_pytorch_on_kernel_path(onednn):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed (pip extra `tf`)")
    backends = ("tf", "tfjs") if tfjs_runs_here() else ("tf",)
    result, log = run_child(onednn, backends)
    assert result["onednn"] == (onednn == "1"), "TensorFlow did not take the kernel path asked for"
    rows = {row["backend"]: row for row in result["rows"]}
    assert set(rows) == set(backends)
    for backend, row in rows.items():
        assert row["status"] == "ok", \
            f"{backend} with TF_ENABLE_ONEDNN_OPTS={onednn}: {row['status']}: {row['reason']}\n{log}"
        assert row["frames"] == FRAMES


def child(weights: str, clip: str, frames: str, backends: str) -> None:
    from tensorflow.python.util import _pywrap_util_port

    from rvm import formats
    from rvm.checkpoints import load_model
    from rvm.measure.parity import Proof, run_parity
    from rvm.media.samples import validation_frames
    from rvm.targets import Target

    model = load_model(weights)
    # TF.js in its default precision only: the kernel path matters for the graph, not the weights' storage
    targets = [Target(name, formats.get(name), formats.get(name).precisions[0]) for name in backends.split(",")]
    rows = run_parity(Proof(model, validation_frames(int(frames), Path(clip)), RATIO), targets, reference_row=False)
    print(json.dumps({"onednn": _pywrap_util_port.IsMklEnabled(),
                      "rows": [{"backend": r.format, "status": r.status, "reason": r.reason, "frames": r.frames}
                               for r in rows]}))


if __name__ == "__main__":
    child(*sys.argv[1:])

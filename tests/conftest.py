"""Shared fixtures: the read-only material in ../shared, read in place and never copied."""
import os
from pathlib import Path

import pytest

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


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared material missing: {path} (tests read ../shared in place)")
    return path

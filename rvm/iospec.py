"""The I/O spec written beside a static artifact: what a C++ or mobile developer needs to feed it without
reading Python (names, shapes, dtypes, layout, value range, colour order, the initial state).

`state_shapes(model, resolution, ratio)` gives the true shapes of r1..r4 at one resolution and ratio.
"""
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS

SPEC_SUFFIX = ".io.json"


def state_shapes(model: nn.Module, resolution: Tuple[int, int], downsample_ratio: float) -> List[tuple]:
    """Shapes of r1..r4 at this resolution and ratio, from one zero-state forward pass."""
    width, height = resolution
    with torch.no_grad():
        *_, r1, r2, r3, r4 = model(torch.zeros(1, 3, height, width), downsample_ratio=downsample_ratio)
    return [tuple(r.shape) for r in (r1, r2, r3, r4)]


def io_spec(fmt: str, precision: str, resolution: Tuple[int, int], downsample_ratio: float,
            shapes: Sequence[tuple], io_dtype: str = "float32") -> dict:
    width, height = resolution
    frame = {"dtype": io_dtype, "layout": "NCHW", "range": [0.0, 1.0], "colour_order": "RGB"}
    inputs = [{"name": ONNX_INPUTS[0], "shape": [1, 3, height, width], **frame}]
    outputs = [{"name": ONNX_OUTPUTS[0], "shape": [1, 3, height, width], **frame,
                "meaning": "foreground colour"},
               {"name": ONNX_OUTPUTS[1], "shape": [1, 1, height, width], **frame, "colour_order": None,
                "meaning": "alpha"}]
    for number, shape in enumerate(shapes, 1):
        inputs.append({"name": ONNX_INPUTS[number], "shape": list(shape), "dtype": io_dtype, "layout": "NCHW",
                       "initial": "zeros", "meaning": f"recurrent state r{number}, fed back from {ONNX_OUTPUTS[number + 1]}"})
        outputs.append({"name": ONNX_OUTPUTS[number + 1], "shape": list(shape), "dtype": io_dtype, "layout": "NCHW",
                        "meaning": f"recurrent state r{number}: feed as {ONNX_INPUTS[number]} on the next frame"})
    return {
        "format": fmt, "precision": precision, "static": True,
        "resolution": {"width": width, "height": height}, "downsample_ratio": downsample_ratio,
        "inputs": inputs, "outputs": outputs,
        "usage": ("First frame: r1i..r4i all zeros of the shapes given. Every next frame: feed r1o..r4o back as "
                  "r1i..r4i. A new shot: zeros again. src is RGB, float in 0..1 (pixel / 255), planar NCHW."),
    }


def spec_path(artifact: Path) -> Path:
    """`rvm_x.onnx` -> `rvm_x.io.json`; a folder artifact keeps its spec inside as `io.json`."""
    artifact = Path(artifact)
    return artifact / "io.json" if artifact.is_dir() else artifact.with_name(artifact.stem + SPEC_SUFFIX)


def write_io_spec(path: Path, spec: dict) -> Path:
    Path(path).write_text(json.dumps(spec, indent=2) + "\n")
    return Path(path)


def read_io_spec(path: Path) -> Optional[dict]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None

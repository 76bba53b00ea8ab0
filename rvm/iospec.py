"""The I/O spec of a static artifact: what a C++ or mobile developer needs to call it without Python.

Written as JSON beside every static artifact (`<artifact>.iospec.json`): input and output names in order, their
true shapes (the recurrent states included: r1..r4 at 1/2, 1/4, 1/8, 1/16 of the downsampled frame), dtypes,
layout, value range, colour order, and how the state starts and flows.
"""
import json
from pathlib import Path
from typing import List, Tuple

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS

SUFFIX = ".iospec.json"
STATE_CHANNELS = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}  # r1..r4 per backbone


def spec_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + SUFFIX)


def state_shapes(variant: str, resolution: Tuple[int, int], downsample_ratio: float, batch: int = 1,
                 layout: str = "NCHW") -> List[Tuple[int, ...]]:
    """Shapes of r1..r4 for frames of (width, height) at this ratio. The network sees floor(H * ratio) rows;
    each encoder stage halves with ceil (stride-2 convolutions padded to 'same')."""
    width, height = resolution
    h, w = int(height * downsample_ratio), int(width * downsample_ratio)
    shapes = []
    for channels in STATE_CHANNELS[variant]:
        h, w = -(-h // 2), -(-w // 2)
        shapes.append((batch, channels, h, w) if layout == "NCHW" else (batch, h, w, channels))
    return shapes


def io_spec(fmt: str, variant: str, precision: str, resolution: Tuple[int, int], downsample_ratio: float,
            layout: str = "NCHW", dtype: str = "float32") -> dict:
    width, height = resolution
    image = (1, 3, height, width) if layout == "NCHW" else (1, height, width, 3)
    matte = (1, 1, height, width) if layout == "NCHW" else (1, height, width, 1)
    states = state_shapes(variant, resolution, downsample_ratio, layout=layout)
    state_inputs, state_outputs = ONNX_INPUTS[1:5], ONNX_OUTPUTS[2:]
    inputs = [{"name": ONNX_INPUTS[0], "shape": list(image), "dtype": dtype, "layout": layout,
               "range": [0.0, 1.0], "color": "RGB", "description": "the frame, RGB scaled to 0..1"}]
    inputs += [{"name": name, "shape": list(shape), "dtype": dtype, "layout": layout, "initial": "zeros",
                "description": f"recurrent state: zeros on a new shot's first frame, else the last frame's {out}"}
               for name, out, shape in zip(state_inputs, state_outputs, states)]
    outputs = [{"name": ONNX_OUTPUTS[0], "shape": list(image), "dtype": dtype, "layout": layout, "range": [0.0, 1.0],
                "color": "RGB", "description": "foreground"},
               {"name": ONNX_OUTPUTS[1], "shape": list(matte), "dtype": dtype, "layout": layout, "range": [0.0, 1.0],
                "description": "alpha matte"}]
    outputs += [{"name": name, "shape": list(shape), "dtype": dtype, "layout": layout,
                 "description": f"recurrent state: feed back as {inp} with the next frame"}
                for name, inp, shape in zip(state_outputs, state_inputs, states)]
    return {"format": fmt, "variant": variant, "precision": precision, "static": True, "resolution": [width, height],
            "downsample_ratio": downsample_ratio, "inputs": inputs, "outputs": outputs,
            "composite": "composition = fgr * pha + background * (1 - pha)"}


def write(path: Path, spec: dict) -> None:
    path.write_text(json.dumps(spec, indent=2) + "\n")

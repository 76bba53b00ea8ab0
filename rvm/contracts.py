"""Contracts as data: artifact I/O names, file names and tolerances, read by exporters, runtimes and tests.

See ../shared/spec/CONTRACTS.md for the drop-in compatibility these encode.
"""
from typing import Dict, Optional, Tuple

STATE_NAMES = ("r1", "r2", "r3", "r4")
ONNX_INPUTS = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
ONNX_OUTPUTS = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
TF_INPUTS = ONNX_INPUTS
TF_OUTPUTS = ONNX_OUTPUTS

FORMATS = ("torchscript", "onnx", "tf", "tfjs", "coreml", "openvino")
# precisions each format can be exported in; the first is the default
FORMAT_PRECISIONS: Dict[str, Tuple[str, ...]] = {
    "torchscript": ("fp32", "fp16"),
    "onnx": ("fp32", "fp16", "int8"),  # int8: QDQ static quantization, needs calibration frames
    "tf": ("fp32",),
    "tfjs": ("int8",),  # uint8-quantized weights, as the official TF.js download
    "coreml": ("fp16", "int8"),
    "openvino": ("fp32", "fp16", "int8"),  # IR; fp16 = compressed weights; int8 = NNCF, needs calibration frames
}

DEFAULT_GREEN = (120, 255, 155)


def artifact_name(fmt: str, variant: str, precision: str, resolution: Optional[Tuple[int, int]] = None,
                  downsample_ratio: Optional[float] = None, coreml_kind: str = "mlmodel", static: bool = False) -> str:
    """Official download names, so users find what they search for; static graphs carry size and ratio."""
    if static:
        width, height = resolution
        fixed = f"{width}x{height}_s{downsample_ratio:g}_"
        return f"rvm_{variant}_{fixed}{precision}.onnx" if fmt == "onnx" else f"rvm_{variant}_openvino_{fixed}{precision}"
    if fmt == "openvino":
        return f"rvm_{variant}_openvino_{precision}"
    if fmt == "onnx":
        return f"rvm_{variant}_{precision}.onnx"
    if fmt == "torchscript":
        return f"rvm_{variant}_{precision}.torchscript"
    if fmt == "tf":
        return f"rvm_{variant}_tf"
    if fmt == "tfjs":
        return f"rvm_{variant}_tfjs_{precision}"
    if fmt == "coreml":
        width, height = resolution
        return f"rvm_{variant}_{width}x{height}_s{downsample_ratio:g}_{precision}.{coreml_kind}"
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")


# int8 (ONNX Runtime QDQ, OpenVINO NNCF, refiner and output head in float), measured on the parity clip (person_a
# upscaled 2x, ratio 0.5, 58 frames, calibrated on 16 frames each of person_b/person_c): ONNX alpha mean 1.48e-2,
# max 0.97 (edge pixels flip), foreground mean 1.1e-2, max 0.24; OpenVINO alpha mean 0.91e-2 (README, INT8).
# The alpha max reaches the quantity's range, so the mean bounds carry the check (1.7x / 1.8x margin over ONNX);
# they do NOT meet the MAD <= 2e-3 goal, and losing the state costs about as much (README).
INT8_MAX = (1.0, 0.5)
INT8_MEAN = (2.5e-2, 2e-2)

# Max absolute error allowed against PyTorch fp32 on real footage, per backend and precision, over
# many recurrent frames: (alpha, foreground). One table for export validation and the parity suite.
TOLERANCES: Dict[Tuple[str, str], Tuple[float, float]] = {
    ("pytorch", "fp32"): (1e-6, 1e-6),
    ("torchscript", "fp32"): (1e-4, 1e-4),
    # fp16, measured on person_a/b/c upscaled 2x at ratio 0.5 over 58 frames: worst alpha 2.7e-2 (TorchScript)
    # and 2.2e-2 (ONNX), worst foreground 2.9e-2 and 2.4e-2, a few edge pixels; means below 6e-4
    ("torchscript", "fp16"): (4e-2, 4e-2),
    ("onnx", "fp32"): (1e-4, 1e-4),
    ("onnx", "fp16"): (4e-2, 4e-2),
    ("tf", "fp32"): (1e-4, 1e-4),
    # uint8 weights, person_a upscaled 2x at ratio 0.5, 58 frames: ONNX-derived DGF set alpha max 1.0 / mean 1.0e-2,
    # foreground max 0.22 / mean 2.0e-2; FGF set (the official TF.js weights) alpha 0.13 / 6.9e-4. The fp32 TF.js
    # graph agrees with PyTorch to 7e-6: the gap is the quantization. Edge pixels flip, so the mean bounds check.
    ("tfjs", "int8"): (1.0, 0.5),
    ("coreml", "fp16"): (3e-2, 3e-2),
    ("coreml", "int8"): (1.5e-1, 1.5e-1),
    ("openvino", "fp32"): (1e-4, 1e-4),
    ("openvino", "fp16"): (4e-2, 4e-2),
    ("onnx", "int8"): INT8_MAX,
    ("openvino", "int8"): INT8_MAX,
}
# Mean absolute error over all pixels and frames: (alpha, foreground). Much tighter than max, since a few
# pixels at hair edges dominate the max; for uint8 TF.js it is the bound that carries the check.
MEAN_TOLERANCES: Dict[Tuple[str, str], Tuple[float, float]] = {
    ("pytorch", "fp32"): (1e-7, 1e-7),
    ("torchscript", "fp32"): (1e-5, 1e-5),
    ("torchscript", "fp16"): (4e-3, 4e-3),
    ("onnx", "fp32"): (1e-5, 1e-5),
    ("onnx", "fp16"): (4e-3, 4e-3),
    ("tf", "fp32"): (1e-5, 1e-5),
    ("tfjs", "int8"): (3e-2, 4e-2),  # measured 1.0e-2 / 2.0e-2 (DGF set), see above
    ("coreml", "fp16"): (3e-3, 3e-3),
    ("coreml", "int8"): (1.5e-2, 1.5e-2),
    ("openvino", "fp32"): (1e-5, 1e-5),
    ("openvino", "fp16"): (4e-3, 4e-3),
    ("onnx", "int8"): INT8_MEAN,
    ("openvino", "int8"): INT8_MEAN,
}


# The fast guided filter (eps 1e-5) amplifies float32 rounding at a few pixels: on 58 frames of person_a,
# TF is 2.3e-3 and ONNX 3.9e-4 from torch fp32, and torch fp32 itself is 2.3e-3 from fp64. No fp32 backend
# can be held closer than that to PyTorch with this refiner; the deep guided filter stays within 1.2e-5.
FAST_GUIDED_FILTER_FP32_FLOOR = 5e-3


def tolerance(backend: str, precision: str, refiner: str = "deep_guided_filter") -> Tuple[float, float]:
    """Max abs error allowed (alpha, foreground) for that backend, precision and refiner."""
    try:
        alpha, fgr = TOLERANCES[(backend, precision)]
    except KeyError:
        raise ValueError(f"no tolerance defined for backend {backend!r} at precision {precision!r}") from None
    if refiner == "fast_guided_filter" and precision == "fp32":
        alpha, fgr = max(alpha, FAST_GUIDED_FILTER_FP32_FLOOR), max(fgr, FAST_GUIDED_FILTER_FP32_FLOOR)
    return alpha, fgr


def auto_downsample_ratio(height: int, width: int) -> float:
    """The official guidance: the downsampled frame's longer side at most 512 px."""
    return min(512 / max(height, width), 1.0)

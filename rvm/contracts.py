"""Contracts as data: the artifacts' I/O names and the official downsample-ratio guidance, read by exporters,
runtimes and tests. Formats, their names and tolerances are in `rvm.formats`.

These keep every artifact drop-in compatible with the official downloads (same names, order and state
conventions).
"""
STATE_NAMES = ("r1", "r2", "r3", "r4")
ONNX_INPUTS = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
ONNX_OUTPUTS = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
TF_INPUTS = ONNX_INPUTS
TF_OUTPUTS = ONNX_OUTPUTS

DEFAULT_GREEN = (120, 255, 155)


def auto_downsample_ratio(height: int, width: int) -> float:
    """The official guidance: the downsampled frame's longer side at most 512 px."""
    return min(512 / max(height, width), 1.0)

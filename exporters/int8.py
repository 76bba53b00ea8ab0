"""Post-training int8 for ONNX Runtime (QDQ static quantization) and OpenVINO (NNCF), calibrated on real
frames with the recurrent state flowing: each sample is (src, r1..r4) as the fp32 model feeds itself when
run over a clip, not zero states, so the ranges of the state tensors are those met in use.

Calibration frames come from `options.calibration` (a clip, a folder of frames, or several joined by commas;
checked by the registry entry's `check` before any work), never from shared material and never from the clip
parity runs on.
`KEEP_FP32` names the layers that stay in float, chosen by measurement (docs/static-int8.md, INT8).
"""
import contextlib
import logging
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from rvm.errors import UsageError
from rvm.formats import calibration_sources

log = logging.getLogger(__name__)

# Node-name fragments of the layers kept in float, chosen by a per-block sweep (docs/static-int8.md, INT8):
# int8 weights of the stem alone (features.0/1, whose activations reach 58) cost alpha MAD 7-15; the rest of the
# encoder, LR-ASPP, the 1/2-resolution decoder block fed by the stem (decode1), the 1/16 ConvGRU (decode4, whose
# state otherwise drifts under NNCF) and the full-resolution refiner and output head each cost 0.2-4.7. Kept in
# float they cost little time (the encoder is ~15% of a 1080p frame at ratio 0.25; the refiner's time is
# full-resolution Resize/Mul that int8 does not speed up); decode3, decode2 and decode0, where the decoder's
# time goes, run int8. Every Resize (and, in OpenVINO, what converting it adds under its name) stays float too:
# NNCF quantizing the decoder's upsampling cost 0.5.
KEEP_FP32 = ("/backbone/", "/aspp/", "/decoder/decode4/", "/decoder/decode1/", "/project_mat/", "/refiner/",
             "/Resize")
# Our ONNX graphs write each convolution over a join as one convolution per part
# (exporters.onnx.convolutions_split_at_concats), so decode1 need not stay float whole: what cost accuracy there is
# the part reading the stem's features. Only that part and the parts reading the image (decode0's second, the
# others' third) stay float; decode1's part over the upsampled map and its ConvGRU run int8 (measured on person_a,
# static 1080p/0.25: alpha MAD 1.19 against 1.08-1.17 with decode1 float, 1.67x -> 1.92x the official download;
# with the image parts int8 too, MAD 1.41 and slower: a 3-channel QLinearConv runs slower than the float one).
ONNX_KEEP_FP32 = tuple(part for part in KEEP_FP32 if part != "/decoder/decode1/") + (
    "/decoder/decode1/conv/conv.0/Conv_part1", "/decoder/decode0/conv/conv.0/Conv_part1", "/conv/conv.0/Conv_part2")
CALIBRATION_UPSCALE = 2  # as export validation: the small sample clips are upscaled so a person is seen
CALIBRATION_FRAMES = 16  # read per calibration source (measured setting: docs/static-int8.md, INT8)


def calibration_samples(model, options, with_ratio: bool, frames_per_source: int = CALIBRATION_FRAMES
                        ) -> List[Dict[str, np.ndarray]]:
    """Inputs of every calibration frame with the states the fp32 model produced on the frames before it."""
    from rvm.media.samples import VALIDATION_RATIO, resize_frames
    from rvm.media.video import read_frames
    ratio = float(options.downsample_ratio or VALIDATION_RATIO)
    model = model.float().cpu().eval()
    samples = []
    for source in calibration_sources(options.calibration):
        frames = read_frames(source, frames_per_source)
        if not frames:
            raise UsageError(f"calibration source {source} has no frames: pass a clip or a folder of images")
        height, width = frames[0].shape[:2]
        frames = resize_frames(frames,
                               options.resolution or (width * CALIBRATION_UPSCALE, height * CALIBRATION_UPSCALE))
        state = [torch.zeros(1, 1, 1, 1)] * 4
        if options.static:  # a static graph takes its states at their true shapes
            from rvm.iospec import state_shapes
            state = [torch.zeros(shape) for shape in state_shapes(model.variant, tuple(options.resolution), ratio)]
        with torch.no_grad():
            for frame in frames:
                src = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))[None].float() / 255
                sample = {"src": src.numpy(), **{f"r{i}i": s.numpy() for i, s in enumerate(state, 1)}}
                if with_ratio:
                    sample["downsample_ratio"] = np.array([ratio], np.float32)
                samples.append(sample)
                _, _, *state = model(src, *state, downsample_ratio=ratio)
    log.info("int8 calibration: %d frames from %s", len(samples), options.calibration)
    return samples


def kept_in_float(names, kept=KEEP_FP32) -> List[str]:
    return [name for name in names if any(part in name for part in kept)]


def quantize_onnx(model, graph, options):
    """QDQ int8 of an fp32 ONNX graph with the KEEP_FP32 layers left in float."""
    samples = calibration_samples(model, options, with_ratio=not options.static)
    graph = qdq_ready(graph)
    return quantize_qdq(graph, samples, kept_in_float((n.name for n in graph.graph.node), ONNX_KEEP_FP32))


def qdq_ready(graph):
    """The graph at opset 13, which per-channel DequantizeLinear needs."""
    from onnx import version_converter
    return version_converter.convert_version(graph, 13)


def quantize_qdq(graph, samples: List[Dict[str, np.ndarray]], float_nodes):
    """QDQ int8 (ONNX Runtime static quantization) of an opset-13 graph: per-channel int8 weights, uint8
    activations, calibrated on `samples`; `float_nodes` stay float, and so do every Resize and whatever reads the
    runtime ratio."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    excluded = list(float_nodes) + [n.name for n in graph.graph.node
                                    if n.op_type == "Resize" or "downsample_ratio" in n.input]
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
        onnx.save(graph, str(fp32))
        quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
        return onnx.load(str(int8))


def quantize_openvino(model, ov_model, options):
    """NNCF post-training int8 of an OpenVINO model, the float layers kept by name."""
    import nncf
    samples = calibration_samples(model, options, with_ratio=not options.static)
    names = [op.get_friendly_name() for op in ov_model.get_ops()]
    ignored = nncf.IgnoredScope(names=kept_in_float(names), validate=False)
    with nncf_output_on_stderr():
        return nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples), ignored_scope=ignored,
                             preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True)


@contextlib.contextmanager
def nncf_output_on_stderr():
    """NNCF logs through its own stdout handler and draws its progress bar on stdout, which is the data channel of
    `rvm bench --json` / `rvm parity --json`: both go to stderr, and its per-layer INFO lines only with -v."""
    nncf_log = logging.getLogger("nncf")
    handlers = [h for h in nncf_log.handlers if getattr(h, "stream", None) is sys.stdout]
    level = nncf_log.level
    for handler in handlers:
        handler.setStream(sys.stderr)
    nncf_log.setLevel(logging.INFO if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_log.setLevel(level)
        for handler in handlers:
            handler.setStream(sys.stdout)

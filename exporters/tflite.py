"""TFLite / LiteRT export: our own TF graph (`tf_network`) at one resolution with the ratio baked in, converted with
TFLite builtin ops only (no Flex / select-TF ops), so the GPU delegate can take the whole graph.

Static shapes fold every size computation into constants. Two things the GPU delegate would otherwise reject are
avoided at build time: the full-size state needs no BroadcastTo (shapes match), and the downsample becomes one
ResizeBilinear on a cropped frame instead of Gathers. torch samples `floor(H * r)` rows at `(i + 0.5) / r - 0.5`;
ResizeBilinear of the first `floor(H * r) / r` rows samples the same points, none of them past that crop, so it is
exact whenever that crop is a whole number of rows (every ratio 1/k, and most others); elsewhere the Gather form
stays and the exporter says so.

Precisions: fp32; fp16 (fp16 weights, as the GPU delegate runs); int8-dynamic (int8 weights, float activations);
int8 (full integer: activations and states calibrated on real frames with the state flowing, float I/O). The
metadata is stored in the flatbuffer's own metadata table, under `rvm_metadata`.
"""
import contextlib
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import List, Optional

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.iospec import state_shapes
from rvm.metadata import TFLITE_METADATA_NAME, ArtifactMetadata

log = logging.getLogger(__name__)


def crop_for_exact_resize(size: int, ratio: float) -> Optional[int]:
    """Rows (or columns) to keep so that ResizeBilinear to floor(size * ratio) samples as torch does, or None."""
    out = math.floor(size * ratio)
    crop = out / ratio
    return round(crop) if out > 0 and abs(crop - round(crop)) < 1e-6 and round(crop) <= size else None


def downsample_static(x, ratio: float):
    import tensorflow as tf

    from .tf_network import resize_by_ratio
    height, width = x.shape[1], x.shape[2]
    crop_h, crop_w = crop_for_exact_resize(height, ratio), crop_for_exact_resize(width, ratio)
    if crop_h is None or crop_w is None:
        log.warning("%dx%d at ratio %g: no exact ResizeBilinear form, the downsample uses Gather ops, which the "
                    "TFLite GPU delegate does not take", width, height, ratio)
        return resize_by_ratio(x, tf.constant(ratio, tf.float32))
    out = [math.floor(height * ratio), math.floor(width * ratio)]
    return tf.raw_ops.ResizeBilinear(images=x[:, :crop_h, :crop_w, :], size=out, align_corners=False,
                                     half_pixel_centers=True)


def static_function(model, resolution, ratio: float):
    """A tf.function over fixed NHWC shapes: (src, r1i..r4i) -> {fgr, pha, r1o..r4o}, and the module holding its
    weights."""
    import tensorflow as tf

    from .tf_network import TFMattingNetwork
    network = TFMattingNetwork(model)
    width, height = resolution

    def forward(src, r1i, r2i, r3i, r4i):
        refine = ratio != 1.0  # as torch: at ratio 1 the network runs on the frame itself, no refiner
        src_sm = downsample_static(src, ratio) if refine else src
        f1, f2, f3, f4 = network.backbone(src_sm)
        hid, *states = network.decoder(src_sm, f1, f2, f3, network.aspp(f4), r1i, r2i, r3i, r4i)
        projected = network.project_mat(hid)
        if refine:
            fgr_residual, pha = network.refiner(src, src_sm, projected[..., :3], projected[..., 3:], hid)
        else:
            fgr_residual, pha = projected[..., :3], projected[..., 3:]
        fgr = tf.clip_by_value(fgr_residual + src, 0.0, 1.0)
        return dict(zip(ONNX_OUTPUTS, (fgr, tf.clip_by_value(pha, 0.0, 1.0), *states)))

    specs = [tf.TensorSpec((1, height, width, 3), tf.float32, name=ONNX_INPUTS[0])]
    specs += [tf.TensorSpec(shape, tf.float32, name=name) for name, shape in
              zip(ONNX_INPUTS[1:5], state_shapes(model.variant, resolution, ratio, layout="NHWC"))]
    return tf.function(forward, input_signature=specs).get_concrete_function(), network


def representative_dataset(model, options):
    """(src, r1i..r4i) NHWC as the full-integer graph will see them: PyTorch fp32 run over the calibration frames
    with the state flowing (a zero state alone would calibrate r1..r4 to nothing)."""
    import tensorflow as tf

    from .int8 import calibration_samples
    samples = calibration_samples(model, options, with_ratio=False)
    return lambda: ({name: tf.constant(value.transpose(0, 2, 3, 1)) for name, value in sample.items()}
                    for sample in samples)


def convert(model, precision: str, options) -> bytes:
    """The TFLite flatbuffer of `model` at the options' resolution and ratio."""
    import tensorflow as tf
    model = model.float().cpu().eval()
    function, network = static_function(model, tuple(options.resolution), float(options.downsample_ratio))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], network)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.representative_dataset = representative_dataset(model, options)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stderr(io.StringIO()):
        return converter.convert()


def with_metadata(content: bytes, metadata: ArtifactMetadata) -> bytes:
    """The flatbuffer with our metadata (JSON) in its metadata table."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata.to_json().encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def export_tflite(model, path, precision: str, options) -> None:
    import ai_edge_litert
    import tensorflow as tf
    content = convert(model, precision, options)
    metadata = ArtifactMetadata.for_export(model, "tflite", precision, {
        "tensorflow": tf.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "")}, options)
    Path(path).write_bytes(with_metadata(content, metadata))
    log.info("wrote TFLite %s (%d bytes) to %s", precision, len(content), path)


# ---- GPU-delegate readiness, without a phone ----------------------------------------------------
def analyzer_report(content: bytes) -> str:
    """TensorFlow's TFLite analyzer with GPU compatibility checking, as text."""
    import tensorflow as tf
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=True)
    return out.getvalue()


# Ops the TFLite GPU delegate runs (its documented list). TF 2.19's analyzer check alone is not enough: with
# gpu_compatibility=True it calls even a Flex op or TOPK_V2 "compatible", so every op is also held to this list.
GPU_DELEGATE_OPS = frozenset("""
    ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D COS DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE
    DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GREATER GREATER_EQUAL HARD_SWISH LEAKY_RELU
    LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD
    PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR RSQRT SELECT_V2 SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE
    SQUARED_DIFFERENCE STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE TRANSPOSE_CONV""".split())


def op_names(content: bytes) -> List[str]:
    """Every op of the model's main graph, by name (e.g. CONV_2D), from the analyzer's listing."""
    return re.findall(r"Op#\d+ ([A-Za-z_0-9]+)", analyzer_report(content))


def gpu_incompatible_ops(content: bytes) -> List[str]:
    """What keeps the GPU delegate from taking the whole graph, one line each: the analyzer's GPU-compatibility
    findings and every op outside GPU_DELEGATE_OPS. Empty when the delegate can take every op."""
    report = analyzer_report(content)
    found = [line.strip() for line in report.splitlines()
             if re.search(r"GPU COMPATIBILITY WARNING|not supported by GPU|is not supported", line)]
    if not found and "looks compatible with GPU delegate" not in report:
        found.append("the analyzer did not confirm GPU compatibility: " + json.dumps(report[-2000:]))
    names = re.findall(r"Op#\d+ ([A-Za-z_0-9]+)", report)
    found += [f"{name}: not an op the GPU delegate runs" for name in sorted(set(names) - GPU_DELEGATE_OPS)]
    return found

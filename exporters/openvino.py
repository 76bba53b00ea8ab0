"""OpenVINO IR export: a folder of the IR (`rvm.formats.OPENVINO_MODEL_FILE` and its weights), converted from
our ONNX graph (dynamic with the runtime ratio, or the static profile) by `openvino.convert_model` (int8: read by
OpenVINO's ONNX frontend, then quantized).

fp32 keeps fp32 weights; fp16 stores them compressed to fp16 (the CPU plugin still computes in fp32 unless
told otherwise, and the I/O stays float32); int8 is NNCF post-training quantization on calibration frames
(`rvm.exporters.int8`). The metadata lies in the IR's runtime info under `rvm`.
"""
import logging
from pathlib import Path

from rvm.formats import OPENVINO_MODEL_FILE
from rvm.metadata import ArtifactMetadata

log = logging.getLogger(__name__)


def export_openvino(model, path, precision: str, options) -> None:
    import onnx
    import openvino as ov

    from .onnx import fp32_graph
    folder = Path(path)
    folder.mkdir(parents=True)
    onnx_file = folder / "fp32.onnx"  # convert_model reads files, not ModelProto objects
    onnx.save(fp32_graph(model, options), str(onnx_file))
    # int8 quantizes the graph as the ONNX frontend reads it: NNCF with the same float layers kept reached alpha
    # MAD 1.00 there and 1.93 on convert_model's fused graph (docs/static-int8.md, INT8)
    ov_model = ov.Core().read_model(str(onnx_file)) if precision == "int8" else ov.convert_model(str(onnx_file))
    onnx_file.unlink()
    if precision == "int8":
        from .int8 import quantize_openvino
        ov_model = quantize_openvino(model, ov_model, options)
    metadata = ArtifactMetadata.for_export(model, "openvino", precision, {"openvino": ov.__version__}, options)
    for key, value in metadata.to_strings().items():
        ov_model.set_rt_info(value, ["rvm", key])
    ov.save_model(ov_model, str(folder / OPENVINO_MODEL_FILE), compress_to_fp16=precision == "fp16")
    log.info("wrote OpenVINO %s to %s", precision, folder)

"""TensorRT export: a serialized engine built from the static ONNX profile (`rvm.exporters.onnx`, fixed resolution,
ratio baked, every Resize on integer sizes, checked TensorRT-ready), where CUDA and TensorRT are present. The
registry entry's check refuses the request in one line elsewhere, before any work.

The artifact is a folder: the engine (`rvm.formats.TENSORRT_ENGINE_FILE`, a plain serialized engine, as
`trtexec --loadEngine` takes) and the metadata file. fp16 lets TensorRT pick fp16 kernels (I/O stays float32);
fp32 turns TF32 off so fp32 means fp32. An engine runs on the GPU model and TensorRT version it was built with:
the metadata names both.
"""
import logging
from pathlib import Path

from rvm.errors import ExportError
from rvm.formats import TENSORRT_ENGINE_FILE
from rvm.metadata import METADATA_FILE, ArtifactMetadata

log = logging.getLogger(__name__)
WORKSPACE_BYTES = 2 << 30


def build_engine(onnx_bytes: bytes, precision: str) -> bytes:
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the static ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see its log above)")
    return bytes(engine)


def export_tensorrt(model, path, precision: str, options) -> None:
    import tensorrt
    import torch

    from .onnx import fp32_graph
    from .tensorrt_check import check_tensorrt_ready
    graph = fp32_graph(model, options)  # options.static: the registry makes TensorRT static always
    check_tensorrt_ready(graph, "the static ONNX graph")
    engine = build_engine(graph.SerializeToString(), precision)
    folder = Path(path)
    folder.mkdir(parents=True)
    (folder / TENSORRT_ENGINE_FILE).write_bytes(engine)
    metadata = ArtifactMetadata.for_export(model, "tensorrt", precision, {"tensorrt": tensorrt.__version__}, options,
                                           device=torch.cuda.get_device_name(0))
    (folder / METADATA_FILE).write_text(metadata.to_json())
    log.info("wrote TensorRT %s engine to %s", precision, folder)

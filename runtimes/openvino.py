"""OpenVINO IR folders (ours) and ONNX files (ours or the official downloads) on an OpenVINO device.

The device name is passed through (`CPU`, `GPU`, `NPU`, `AUTO`...; `auto`/`cpu` mean `CPU`). On CPU the
inference precision is pinned to f32: on CPUs with avx512_bf16 or AMX the plugin otherwise computes in bf16
and alpha moves by up to 0.2 (measured on this machine's CPU).

The recurrent state stays inside OpenVINO between frames: two infer requests take turns, and each one's
state inputs are the other's output tensors, set without a copy; only fgr and pha are copied out.
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import UsageError
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo

log = logging.getLogger(__name__)
MODEL_FILE = "model.xml"


def model_file(path) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def device_name(device: str) -> str:
    return "CPU" if device in ("auto", "cpu") else device.upper()


class OpenVinoRuntime(Runtime):
    backend = "openvino"

    def __init__(self, compiled, path=None, metadata: Optional[ArtifactMetadata] = None, precision: str = "fp32",
                 **options):
        self.compiled = compiled
        inputs = [port.any_name for port in compiled.inputs]
        outputs = [port.any_name for port in compiled.outputs]
        if inputs not in (list(ONNX_INPUTS), list(ONNX_INPUTS[:5])) or outputs != list(ONNX_OUTPUTS):
            raise UsageError(f"{path}: not an RVM model: expected inputs {', '.join(ONNX_INPUTS)} (without the ratio "
                             f"when static) and outputs {', '.join(ONNX_OUTPUTS)}, got {inputs} -> {outputs}")
        self.has_ratio_input = len(inputs) == 6
        if metadata is not None:
            precision = metadata.precision
        info = RuntimeInfo(self.backend, str(compiled.get_property("EXECUTION_DEVICES")[0]).lower(),
                           precision, path=str(path), metadata=metadata)
        self.initial_shapes = [(1, 1, 1, 1)] * 4
        if not self.has_ratio_input:
            if metadata is None or metadata.downsample_ratio is None:
                raise UsageError(f"{path}: a static RVM model without its baked downsample_ratio in the metadata")
            self.initial_shapes = [tuple(compiled.input(i).get_shape()) for i in range(1, 5)]
        self.requests = [compiled.create_infer_request(), compiled.create_infer_request()]
        self.turn = 0
        super().__init__(info, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", inference_precision: str = "f32", **options):
        """`inference_precision` (f32, bf16, f16) is the CPU plugin's hint; f32 unless asked otherwise."""
        import openvino as ov
        core = ov.Core()
        model = core.read_model(str(model_file(path)))
        metadata = read_metadata(model)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        name = device_name(device)
        if name == "CPU":
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        # an artifact without our metadata (the official ONNX downloads): its precision from the input type
        precision = "fp16" if model.input(0).get_element_type() == ov.Type.f16 else "fp32"
        compiled = core.compile_model(model, name, config)
        return cls(compiled, path=path, metadata=metadata, precision=precision, **options)

    def _run(self, src, state, downsample_ratio):
        import openvino as ov
        request = self.requests[self.turn]
        self.turn ^= 1
        if state is None:
            state = [ov.Tensor(np.zeros(shape, np.float32)) for shape in self.initial_shapes]
        request.set_input_tensor(0, ov.Tensor(np.ascontiguousarray(src, np.float32)))
        for index, tensor in enumerate(state, 1):
            request.set_input_tensor(index, tensor)
        if self.has_ratio_input:
            request.set_input_tensor(5, ov.Tensor(np.array([downsample_ratio], np.float32)))
        request.infer()
        fgr, pha = (request.get_output_tensor(i).data.astype(np.float32, copy=True) for i in (0, 1))
        # the next frame runs on the other request, which reads these tensors while this one is idle
        return fgr, pha, [request.get_output_tensor(i) for i in range(2, 6)]

    def _state_to_numpy(self, state):
        return [np.array(tensor.data, np.float32) for tensor in state]

    def _state_from_numpy(self, arrays):
        import openvino as ov
        return [ov.Tensor(np.ascontiguousarray(a, np.float32)) for a in arrays]

    def close(self) -> None:
        self.requests, self.compiled = [], None


def read_metadata(model) -> Optional[ArtifactMetadata]:
    """The `rvm` section of the IR's runtime info (ours); None for other models."""
    if not model.has_rt_info(["rvm"]):
        return None
    return ArtifactMetadata.from_strings({key: str(value.value) for key, value in model.get_rt_info()["rvm"].items()})

"""OpenVINO IR folders (ours) and ONNX files (ours or the official downloads) on an OpenVINO device.

The device name is passed through (`CPU`, `GPU`, `NPU`, `AUTO`...; `auto`/`cpu` mean `CPU`). On CPU the
inference precision is pinned to f32: on CPUs with avx512_bf16 or AMX the plugin otherwise computes in bf16
and alpha moves by up to 0.2 (measured on this machine's CPU).

The recurrent state stays inside OpenVINO between frames, in one of two forms (`state=`, measured side by side
in `rvm bench`): "requests" (default), two infer requests taking turns, each one's state inputs set to the other's
output tensors without a copy; or "stateful", OpenVINO's stateful model, where r1i..r4i/r1o..r4o become variables
read and assigned inside the graph (ReadValue/Assign) and never cross the API. Only fgr and pha are copied out.
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, UsageError
from rvm.formats import OPENVINO_MODEL_FILE, OPENVINO_WEIGHTS_FILE
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo, SettingsSweep

log = logging.getLogger(__name__)
STATE_FORMS = ("requests", "stateful")


def model_file(path) -> Path:
    path = Path(path)
    return path / OPENVINO_MODEL_FILE if path.is_dir() else path


def check_ir(xml: Path) -> None:
    """An IR is an XML file beside its .bin weights: checked before OpenVINO reads it, as OpenVINO tries every
    frontend on a file its IR reader refuses (the TensorFlow one logs parse errors of the bytes to stderr)."""
    with open(xml, "rb") as file:
        head = file.read(256).lstrip(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"<"):
        raise ArtifactError(f"{xml} is not an OpenVINO IR: not an XML file (it starts with {head[:8]!r})")
    if not xml.with_suffix(".bin").is_file():
        raise ArtifactError(f"{xml} has no {xml.with_suffix('.bin').name} beside it: an IR is "
                            f"{OPENVINO_MODEL_FILE} and its weights {OPENVINO_WEIGHTS_FILE}")


def device_name(device: str) -> str:
    return "CPU" if device in ("auto", "cpu") else device.upper()


class OpenVinoRuntime(Runtime):
    backend = "openvino"
    state_ports = True  # r1i..r4i / r1o..r4o are graph inputs and outputs
    request_count = 2

    def __init__(self, compiled, path=None, metadata: Optional[ArtifactMetadata] = None, precision: str = "fp32",
                 **options):
        self.compiled = compiled
        inputs = [port.any_name for port in compiled.inputs]
        outputs = [port.any_name for port in compiled.outputs]
        expected_inputs = list(ONNX_INPUTS[:5] if self.state_ports else ONNX_INPUTS[:1])
        expected_outputs = list(ONNX_OUTPUTS if self.state_ports else ONNX_OUTPUTS[:2])
        if inputs not in (expected_inputs + [ONNX_INPUTS[5]], expected_inputs) or outputs != expected_outputs:
            raise ArtifactError(f"{path}: not an RVM model: expected inputs {', '.join(expected_inputs)} (and "
                                f"{ONNX_INPUTS[5]} when dynamic) and outputs {', '.join(expected_outputs)}, got "
                                f"{inputs} -> {outputs}")
        self.has_ratio_input = inputs[-1] == ONNX_INPUTS[5]
        if metadata is not None:
            precision = metadata.precision
        info = RuntimeInfo(self.backend, str(compiled.get_property("EXECUTION_DEVICES")[0]).lower(),
                           precision, path=str(path), metadata=metadata)
        self.initial_shapes = [(1, 1, 1, 1)] * 4
        if not self.has_ratio_input:
            if metadata is None or metadata.downsample_ratio is None:
                raise ArtifactError(f"{path}: a static RVM model without its baked downsample_ratio in the metadata")
            self.initial_shapes = [tuple(port.get_shape()) for port in compiled.inputs[1:5]] if self.state_ports else []
        self.requests = [compiled.create_infer_request() for _ in range(self.request_count)]
        self.turn = 0
        super().__init__(info, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", inference_precision: str = "f32", state: str = "requests",
                  threads: Optional[int] = None, **options):
        """`inference_precision` (f32, bf16, f16) is the CPU plugin's hint; f32 unless asked otherwise. `state` is
        "requests" or "stateful" (static artifacts only), see the module's docstring. `threads`: the CPU plugin's
        INFERENCE_NUM_THREADS (default: the plugin's choice)."""
        import openvino as ov
        if state not in STATE_FORMS:
            raise UsageError(f"state must be one of {', '.join(STATE_FORMS)}, got {state!r}")
        core = ov.Core()
        if model_file(path).suffix.lower() == ".xml":  # else an ONNX file (the official downloads)
            check_ir(model_file(path))
        model = core.read_model(str(model_file(path)))
        metadata = read_metadata(model)
        if state == "stateful":
            make_stateful(model, path)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        name = device_name(device)
        if name == "CPU":
            config["INFERENCE_PRECISION_HINT"] = inference_precision
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
        # an artifact without our metadata (the official ONNX downloads): its precision from the input type
        precision = "fp16" if model.input(0).get_element_type() == ov.Type.f16 else "fp32"
        compiled = core.compile_model(model, name, config)
        runtime = StatefulOpenVinoRuntime if state == "stateful" else OpenVinoRuntime
        return runtime(compiled, path=path, metadata=metadata, precision=precision, **options)

    @classmethod
    def settings_sweeps(cls):
        """The state's two forms on our static fp32 IR (stateful needs a static one): the numbers behind the
        "requests" default."""
        return [SettingsSweep("openvino_state_settings",
                              "OpenVINO static fp32, the recurrent state as graph inputs/outputs traded between two "
                              "infer requests or as the stateful model's variables (default: requests):",
                              (("state", "state"),), tuple({"state": form} for form in STATE_FORMS), static=True)]

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


class StatefulOpenVinoRuntime(OpenVinoRuntime):
    """The state in the graph's variables, from one infer request; a restored state is written into them before
    the next frame. `state` is IN_VARIABLES after a frame, restored arrays until the next one."""
    state_ports = False
    request_count = 1

    def _run(self, src, state, downsample_ratio):
        import openvino as ov
        request = self.requests[0]
        if state is None:
            request.reset_state()  # the variables' initial values: zeros at the state's shapes
        elif state is not IN_VARIABLES:
            for variable, array in zip(self._variables(), state):
                variable.state = ov.Tensor(array)
        request.set_input_tensor(0, ov.Tensor(np.ascontiguousarray(src, np.float32)))  # static: no ratio input
        request.infer()
        fgr, pha = (request.get_output_tensor(i).data.astype(np.float32, copy=True) for i in (0, 1))
        return fgr, pha, IN_VARIABLES

    def _variables(self) -> list:
        """r1..r4's variables in order (MakeStateful names each after its input and output: `r1ir1o`)."""
        by_name = {variable.name: variable for variable in self.requests[0].query_state()}
        return [by_name[i + o] for i, o in zip(ONNX_INPUTS[1:5], ONNX_OUTPUTS[2:])]

    def _state_to_numpy(self, state):
        if state is IN_VARIABLES:
            return [np.array(variable.state.data, np.float32) for variable in self._variables()]
        return list(state)

    def _state_from_numpy(self, arrays):
        return [np.ascontiguousarray(a, np.float32) for a in arrays]


IN_VARIABLES = object()  # the state lives in the infer request's variables


def make_stateful(model, path) -> None:
    """Turn r1i..r4i/r1o..r4o into variables (ReadValue/Assign). Their initial value is zeros of the state inputs'
    shapes, which only a static artifact has (a dynamic one starts from [1,1,1,1] and grows on frame one)."""
    from openvino.passes import MakeStateful, Manager
    if any(port.get_partial_shape().is_dynamic for port in model.inputs[1:5]):
        raise UsageError(f"{path}: the stateful form needs a static artifact (state shapes known): export with "
                         f"--static --resolution WxH --downsample-ratio R, or use state='requests'")
    manager = Manager()
    manager.register_pass(MakeStateful(dict(zip(ONNX_INPUTS[1:5], ONNX_OUTPUTS[2:]))))
    manager.run_passes(model)


def read_metadata(model) -> Optional[ArtifactMetadata]:
    """The `rvm` section of the IR's runtime info (ours); None for other models."""
    if not model.has_rt_info(["rvm"]):
        return None
    return ArtifactMetadata.from_strings({key: str(value.value) for key, value in model.get_rt_info()["rvm"].items()})

"""ONNX artifacts (ours or the official downloads) in ONNX Runtime, CUDA when available, else CPU.

The recurrent states stay on the device between frames: they are ORT values bound through io-binding,
so on CUDA only the frame goes up and fgr/pha come down. The first frame gets `[1,1,1,1]` zero states,
as the contract says third-party code does. fp16 artifacts take fp16 src/states and an fp32 ratio;
which one a file is comes from its input types, so the official downloads (no metadata) work too.
"""
import logging
from typing import Optional

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, BackendUnavailable, UsageError
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo, SettingsSweep

log = logging.getLogger(__name__)
ELEMENT_TYPES = {"tensor(float)": (np.float32, "fp32"), "tensor(float16)": (np.float16, "fp16")}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def physical_cores() -> int:
    try:
        import psutil
        return psutil.cpu_count(logical=False) or 1
    except ImportError:
        import os
        return os.cpu_count() or 1


def session_options(graph_optimization: str = "all", intra_op_threads: Optional[int] = None, spinning: bool = False):
    """Graph optimisation level ALL, one intra-op thread per physical core and no spin-waiting unless told
    otherwise. Spinning threads keep their cores busy between frames, starving the decode and encode work of a
    conversion (1080p on 2 cores: 5.5 -> 6.1 frames/s sequential, 6.6 -> 7.1 pipelined) for no tensor gain."""
    import onnxruntime as ort
    if graph_optimization not in OPTIMIZATION_LEVELS:
        raise UsageError(f"graph_optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                         f"got {graph_optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    options.intra_op_num_threads = intra_op_threads or physical_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def providers_for(device: str) -> list:
    import onnxruntime as ort
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
                                     f"(has {', '.join(available)}): install onnxruntime-gpu or use --device cpu")
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device != "cpu":
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda[:N]")
    return ["CPUExecutionProvider"]


class OnnxRuntime(Runtime):
    backend = "onnx"

    def __init__(self, session, path=None, **options):
        self.session = session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        # static graphs (ratio baked) have no downsample_ratio input
        if len(inputs) not in (len(ONNX_INPUTS), len(ONNX_INPUTS) - 1) or len(outputs) != len(ONNX_OUTPUTS):
            raise ArtifactError(f"{path}: not an RVM ONNX model: expected inputs {', '.join(ONNX_INPUTS)} and "
                                f"outputs {', '.join(ONNX_OUTPUTS)}, got {[i.name for i in inputs]} -> "
                                f"{[o.name for o in outputs]}")
        # by position, as third-party clients do: [0] src, [1..4] states, [5] ratio
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in outputs]
        if inputs[0].type not in ELEMENT_TYPES:
            raise ArtifactError(f"{path}: src is {inputs[0].type}, expected tensor(float) or tensor(float16)")
        self.dtype, precision = ELEMENT_TYPES[inputs[0].type]
        on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        self.device_type, self.device_id = ("cuda", self._cuda_device_id()) if on_cuda else ("cpu", 0)
        metadata = ArtifactMetadata.from_strings(session.get_modelmeta().custom_metadata_map)
        if metadata is not None:  # int8 (QDQ) graphs take float32 as fp32 ones do
            precision = metadata.precision
        self.static = len(inputs) == len(ONNX_INPUTS) - 1
        self.initial_shapes = [(1, 1, 1, 1)] * 4
        if self.static:
            if metadata is None or metadata.downsample_ratio is None:
                raise ArtifactError(f"{path}: a static RVM graph without its baked downsample_ratio in the metadata")
            self.initial_shapes = [tuple(i.shape) for i in inputs[1:5]]
        device = f"cuda:{self.device_id}" if on_cuda else "cpu"
        super().__init__(RuntimeInfo(self.backend, device, precision, path=path, metadata=metadata), **options)

    def _cuda_device_id(self) -> int:
        return int(self.session.get_provider_options()["CUDAExecutionProvider"].get("device_id", 0))

    @classmethod
    def from_path(cls, path, device: str = "auto", graph_optimization: str = "all",
                  intra_op_threads: Optional[int] = None, spinning: bool = False, threads: Optional[int] = None,
                  **options):
        """`graph_optimization` (disable/basic/extended/all), `intra_op_threads` (`threads` when not given) and
        `spinning` tune the session."""
        import onnxruntime as ort
        providers = providers_for(device)
        session = ort.InferenceSession(str(path), session_options(graph_optimization, intra_op_threads or threads,
                                                                  spinning),
                                       providers=providers)
        if device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
            raise BackendUnavailable(f"onnxruntime could not start CUDA for {path} (see its log above): "
                                     f"check the CUDA/cuDNN install or use --device cpu")
        return cls(session, path=str(path), **options)

    @classmethod
    def settings_sweeps(cls):
        """CPU session settings of our fp32 export: the numbers behind the defaults (optimisation level ALL,
        one intra-op thread per physical core, no spinning)."""
        settings = [{"graph_optimization": level, "intra_op_threads": threads, "spinning": False}
                    for threads in sorted({1, physical_cores()}) for level in ("basic", "extended", "all")]
        settings.append({"graph_optimization": "all", "intra_op_threads": physical_cores(), "spinning": True})
        return [SettingsSweep(
            "onnx_cpu_settings", "ONNX Runtime CPU settings, our fp32 export (defaults: all, one thread per physical "
                                 "core, no spinning):",
            (("graph_optimization", "graph optimisation"), ("intra_op_threads", "intra-op threads"),
             ("spinning", "spinning")), tuple(settings))]

    def _ort_value(self, array: np.ndarray):
        import onnxruntime as ort
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, self.dtype), self.device_type,
                                                self.device_id)

    def _run(self, src, state, downsample_ratio):
        if state is None:
            state = [self._ort_value(np.zeros(shape, self.dtype)) for shape in self.initial_shapes]
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_names[0], self._ort_value(src))
        for name, value in zip(self.input_names[1:5], state):
            binding.bind_ortvalue_input(name, value)
        if not self.static:
            binding.bind_cpu_input(self.input_names[5], np.array([downsample_ratio], np.float32))
        # fgr and pha land straight in new numpy arrays: no ORT-owned output and no copy out of it (at 1080p
        # 33 MB a frame less to write, 2-3% more frames/s); fresh each frame, as callers may keep them
        batch, _, height, width = src.shape
        fgr, pha = (np.empty((batch, channels, height, width), self.dtype) for channels in (3, 1))
        for name, array in zip(self.output_names[:2], (fgr, pha)):
            binding.bind_output(name, "cpu", 0, self.dtype, array.shape, array.ctypes.data)
        for name in self.output_names[2:]:
            binding.bind_output(name, self.device_type, self.device_id)
        self.session.run_with_iobinding(binding)
        new_state = binding.get_outputs()[2:]
        return fgr.astype(np.float32, copy=False), pha.astype(np.float32, copy=False), new_state

    def _state_to_numpy(self, state):
        return [value.numpy() for value in state]

    def _state_from_numpy(self, arrays):
        return [self._ort_value(a) for a in arrays]

    def close(self) -> None:
        self.session = None

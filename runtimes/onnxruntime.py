"""ONNX artifacts (ours or the official downloads) in ONNX Runtime, CUDA when available, else CPU.

The recurrent states stay on the device between frames: they are ORT values bound through io-binding,
so on CUDA only the frame goes up and fgr/pha come down. The first frame gets `[1,1,1,1]` zero states,
as the contract says third-party code does. fp16 artifacts take fp16 src/states and an fp32 ratio;
which one a file is comes from its input types, so the official downloads (no metadata) work too.

On the CPU our fp32 and int8 graphs run without their last full-resolution operators: the session stops at the
guided filter's low-resolution coefficients and `full_resolution.FusedFullResolutionStep` upsamples and applies
them in one pass over the frame (1080p at ratio 0.25: the refiner's ~30 ms become ~8). The artifact itself is
unchanged, a drop-in for the official file; `full_resolution_step="graph"` runs it whole.
"""
import importlib.util
import logging
from typing import Optional, Tuple

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, BackendUnavailable, MissingDependency, UsageError
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo, SettingsSweep

log = logging.getLogger(__name__)
ELEMENT_TYPES = {"tensor(float)": (np.float32, "fp32"), "tensor(float16)": (np.float16, "fp16")}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
FULL_RESOLUTION_STEPS = ("auto", "fused", "graph")
LUMA = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]], np.float32)  # [src, mean(src)]


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


def full_resolution_coefficients(model) -> Optional[Tuple[str, str]]:
    """(a, b): the names of the guided filter's low-resolution coefficients when the graph ends in the
    full-resolution step as our exports write it (`rvm.model.refiners.apply_coefficients`), float32:
    `fgr, pha = Split[3, 1](Clip(Resize(a) * Reshape(MatMul(LUMA, Reshape(src))) + Resize(b), 0, 1))`.
    None for any other ending: the official downloads, fp16 graphs, a graph edited by hand."""
    from onnx import TensorProto, helper, numpy_helper
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    # tensors by name, converted to arrays only when checked: the weights are never read
    tensors = {t.name: t for t in graph.initializer}
    tensors.update({node.output[0]: node.attribute[0].t for node in graph.node
                    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})

    def made_by(name: str, op_type: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def input_made_by(node, op_type: str):
        """The producer of the first of `node`'s inputs that an `op_type` node makes, or None."""
        return next(filter(None, (made_by(name, op_type) for name in node.input)), None)

    def attributes(node) -> dict:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def constant(name: str):
        return numpy_helper.to_array(tensors[name]) if name in tensors else None

    def constant_is(name: str, expected) -> bool:
        value = constant(name)
        return value is not None and value.shape == np.shape(expected) and np.array_equal(value, expected)

    outputs = [o.name for o in graph.output]
    src = graph.input[0]
    split = made_by(outputs[0], "Split")
    if split is None or list(split.output) != outputs[:2] or src.type.tensor_type.elem_type != TensorProto.FLOAT:
        return None
    sizes = constant(split.input[1]) if len(split.input) > 1 else attributes(split).get("split")  # opset 13+
    if attributes(split).get("axis") != 1 or sizes is None or list(sizes) != [3, 1]:
        return None
    clip = made_by(split.input[0], "Clip")
    if clip is None or len(clip.input) != 3 or not (constant_is(clip.input[1], np.float32(0))
                                                    and constant_is(clip.input[2], np.float32(1))):
        return None
    add = made_by(clip.input[0], "Add")
    multiply = add and input_made_by(add, "Mul")
    resize_b = add and input_made_by(add, "Resize")
    if not multiply or not resize_b:
        return None
    resize_a, guide = input_made_by(multiply, "Resize"), input_made_by(multiply, "Reshape")
    luma = guide is not None and made_by(guide.input[0], "MatMul")
    flat_src = luma and made_by(luma.input[1], "Reshape")
    if resize_a is None or not flat_src or flat_src.input[0] != src.name or not constant_is(luma.input[0], LUMA):
        return None
    for resize in (resize_a, resize_b):  # the sampling full_resolution.sample_taps reproduces
        settings = attributes(resize)
        if settings.get("mode") != b"linear" or settings.get("coordinate_transformation_mode") != b"half_pixel":
            return None
    return resize_a.input[0], resize_b.input[0]


def without_full_resolution_step(model, coefficients: Tuple[str, str]):
    """The graph ending at the coefficients (a, b) and the states: what leads only to fgr and pha is dropped."""
    from onnx import TensorProto, helper
    keep = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in coefficients]
    keep += list(model.graph.output[2:])
    producer = {output: node for node in model.graph.node for output in node.output}
    needed, pending = set(), [value.name for value in keep]
    while pending:
        node = producer.get(pending.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            pending.extend(node.input)
    nodes = [node for node in model.graph.node if id(node) in needed]
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(nodes, model.graph.name, list(model.graph.input), keep,
                              [t for t in model.graph.initializer if t.name in used])
    cut = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    cut.metadata_props.extend(model.metadata_props)
    return cut


class OnnxRuntime(Runtime):
    backend = "onnx"

    def __init__(self, session, path=None, full_resolution_step=None, **options):
        """`full_resolution_step`: a `FusedFullResolutionStep` when `session` runs the graph without it (its
        first two outputs are then the coefficients a and b)."""
        self.session = session
        self.full_resolution_step = full_resolution_step
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
                  full_resolution_step: str = "auto", profile_file_prefix: Optional[str] = None, **options):
        """`graph_optimization` (disable/basic/extended/all), `intra_op_threads` (`threads` when not given) and
        `spinning` tune the session. `full_resolution_step`: `fused` runs the guided filter's last step in one
        pass (CPU, our fp32/int8 graphs, Numba), `graph` as the graph's operators, `auto` fused where it can be.
        `profile_file_prefix` turns ONNX Runtime's profiler on (`rvm profile`)."""
        import onnxruntime as ort
        if full_resolution_step not in FULL_RESOLUTION_STEPS:
            raise UsageError(f"full_resolution_step must be one of {', '.join(FULL_RESOLUTION_STEPS)}, "
                             f"got {full_resolution_step!r}")
        providers = providers_for(device)
        settings = session_options(graph_optimization, intra_op_threads or threads, spinning)
        if profile_file_prefix is not None:
            settings.enable_profiling, settings.profile_file_prefix = True, profile_file_prefix
        model, step = str(path), None
        if full_resolution_step != "graph" and providers == ["CPUExecutionProvider"]:
            model, step = cls._fuse(path, full_resolution_step == "fused", settings.intra_op_num_threads)
        elif full_resolution_step == "fused":
            raise UsageError("the fused full-resolution step runs on the CPU only: use --device cpu or "
                             "full_resolution_step='auto'")
        session = ort.InferenceSession(model, settings, providers=providers)
        if device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
            raise BackendUnavailable(f"onnxruntime could not start CUDA for {path} (see its log above): "
                                     f"check the CUDA/cuDNN install or use --device cpu")
        return cls(session, path=str(path), full_resolution_step=step, **options)

    @staticmethod
    def _fuse(path, required: bool, threads: int):
        """(what the session loads, the fused step or None): the graph without its full-resolution step where it
        has ours and Numba is installed; else the file as it is (`required`: else a one-line error)."""
        if importlib.util.find_spec("numba") is None or importlib.util.find_spec("onnx") is None:
            if required:
                raise MissingDependency("the fused full-resolution step", "onnx", "numba")
            return str(path), None
        import onnx

        from .full_resolution import FusedFullResolutionStep
        try:
            model = onnx.load(str(path))
        except Exception:  # not a model onnx reads: ONNX Runtime, loading the file as it is, says why
            return str(path), None
        coefficients = full_resolution_coefficients(model)
        if coefficients is None:
            if required:
                raise UsageError(f"{path}: this graph does not end in the guided filter's full-resolution step as "
                                 f"our exports write it (an official download, fp16, or edited): nothing to fuse; "
                                 f"use full_resolution_step='graph'")
            log.debug("%s: no fusable full-resolution step; running the graph as it is", path)
            return str(path), None
        log.debug("%s: full-resolution step fused (coefficients %s, %s)", path, *coefficients)
        return without_full_resolution_step(model, coefficients).SerializeToString(), FusedFullResolutionStep(threads)

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
             ("spinning", "spinning")), tuple(settings)),
            SettingsSweep(
                "onnx_full_resolution_step", "ONNX Runtime, the guided filter's full-resolution step fused in one "
                                             "pass or run as the graph's operators, our static fp32 export "
                                             "(default: fused where Numba is installed):",
                (("full_resolution_step", "full-resolution step"),),
                tuple({"full_resolution_step": step} for step in ("fused", "graph")), static=True)]

    def _ort_value(self, array: np.ndarray):
        import onnxruntime as ort
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, self.dtype), self.device_type,
                                                self.device_id)

    def _bound_inputs(self, src, state, downsample_ratio):
        """An io-binding with the frame, the state (zeros of the first frame's shapes when None) and the ratio."""
        if state is None:
            state = [self._ort_value(np.zeros(shape, self.dtype)) for shape in self.initial_shapes]
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_names[0], self._ort_value(src))
        for name, value in zip(self.input_names[1:5], state):
            binding.bind_ortvalue_input(name, value)
        if not self.static:
            binding.bind_cpu_input(self.input_names[5], np.array([downsample_ratio], np.float32))
        return binding

    def _run(self, src, state, downsample_ratio):
        if self.full_resolution_step is not None:
            return self._run_fused(src, state, downsample_ratio)
        binding = self._bound_inputs(src, state, downsample_ratio)
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

    def _run_fused(self, src, state, downsample_ratio):
        """The session up to the coefficients a and b, then the fused step over the frame (float32 graphs only,
        so `src` is what the session reads)."""
        src = np.ascontiguousarray(src, np.float32)
        binding = self._bound_inputs(src, state, downsample_ratio)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        a, b, *new_state = binding.get_outputs()
        fgr, pha = self.full_resolution_step(a.numpy(), b.numpy(), src)
        return fgr, pha, new_state

    def _state_to_numpy(self, state):
        return [value.numpy() for value in state]

    def _state_from_numpy(self, arrays):
        return [self._ort_value(a) for a in arrays]

    def close(self) -> None:
        if self.full_resolution_step is not None:
            self.full_resolution_step.close()
        self.session = None

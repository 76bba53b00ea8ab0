"""TFLite / LiteRT backend on the `ai-edge-litert` interpreter (XNNPACK on CPU): NHWC inside, NCHW at the boundary.

A static artifact: one resolution, the ratio baked in, both read from the `rvm_metadata` entry of the flatbuffer's
metadata table (written by rvm.exporters.tflite). The state is the interpreter's outputs, copied out each frame
(the interpreter reuses its buffers). `kernels` picks the CPU kernel path: XNNPACK (LiteRT's default), LiteRT's
own optimised kernels without it, or its reference kernels; artifacts are tested on all three.
"""
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, BackendUnavailable, UsageError
from rvm.metadata import TFLITE_METADATA_NAME, ArtifactMetadata

from .base import Runtime, RuntimeInfo

KERNELS = ("xnnpack", "builtin", "reference")


def read_metadata(content: bytes) -> Optional[ArtifactMetadata]:
    """Our metadata from a TFLite flatbuffer's metadata table, or None when it carries none."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == TFLITE_METADATA_NAME.encode():
            return ArtifactMetadata.from_json(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return None


class TFLiteRuntime(Runtime):
    backend = "tflite"

    def __init__(self, path, device: str = "auto", threads: Optional[int] = None, kernels: str = "xnnpack",
                 **options):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        resolvers = dict(zip(KERNELS, (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                                       OpResolverType.BUILTIN_REF)))
        if kernels not in resolvers:
            raise UsageError(f"TFLite kernels are one of {', '.join(KERNELS)}, got {kernels!r}")
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"the TFLite runtime here runs on the CPU (XNNPACK), not {device!r}: use cpu")
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"no TFLite model at {path}")
        metadata = read_metadata(path.read_bytes())
        if metadata is None or not metadata.static:
            raise ArtifactError(f"{path} carries no rvm-toolkit metadata (its baked downsample ratio is unknown): "
                             f"export it with `rvm export --format tflite`")
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count(),
                                       experimental_op_resolver_type=resolvers[kernels])
        self.interpreter.allocate_tensors()
        # tensor indices by contract name, from the serving signature (its runner itself cannot reshape under XNNPACK)
        signature = self.interpreter.get_signature_runner()
        inputs, outputs = signature.get_input_details(), signature.get_output_details()
        del signature  # it holds views of the interpreter's buffers, which would block invoke()
        missing = [n for n in (*ONNX_INPUTS[:5], *ONNX_OUTPUTS) if n not in {**inputs, **outputs}]
        if missing:
            raise ArtifactError(f"{path} is not an RVM TFLite model: no {', '.join(missing)} in its signature")
        self._inputs = {name: detail["index"] for name, detail in inputs.items()}
        self._outputs = {name: detail["index"] for name, detail in outputs.items()}
        self._state_shapes = [tuple(inputs[name]["shape"]) for name in ONNX_INPUTS[1:5]]
        super().__init__(RuntimeInfo(self.backend, "cpu", metadata.precision, path=str(path), metadata=metadata),
                         **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None, **options) -> "TFLiteRuntime":
        """`threads`: the interpreter's num_threads (default: every core)."""
        return cls(path, device=device, threads=threads, **options)

    def _run(self, src, state, downsample_ratio):
        if src.shape[0] != 1:
            raise UsageError(f"this TFLite artifact takes one frame at a time, got a batch of {src.shape[0]}")
        interpreter = self.interpreter
        states = state if state is not None else [np.zeros(s, np.float32) for s in self._state_shapes]
        interpreter.set_tensor(self._inputs["src"], np.ascontiguousarray(src.transpose(0, 2, 3, 1)))
        for name, value in zip(ONNX_INPUTS[1:5], states):
            interpreter.set_tensor(self._inputs[name], value)
        interpreter.invoke()
        out = {name: interpreter.get_tensor(index) for name, index in self._outputs.items()}  # copies
        return (out["fgr"].transpose(0, 3, 1, 2), out["pha"].transpose(0, 3, 1, 2),
                [out[name] for name in ONNX_OUTPUTS[2:]])

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return [np.ascontiguousarray(s.transpose(0, 3, 1, 2)) for s in state]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [np.ascontiguousarray(a.transpose(0, 2, 3, 1), np.float32) for a in arrays]

    def close(self) -> None:
        self.interpreter = None

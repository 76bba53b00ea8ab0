"""TensorRT backend: a serialized engine of the static profile run on one CUDA stream, the recurrent state kept on
the GPU between frames (torch CUDA tensors are the engine's buffers; the outputs r*o become the next frame's r*i
without leaving the GPU). Only fgr and pha are copied to the host.
"""
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, BackendError, BackendUnavailable
from rvm.formats import TENSORRT_ENGINE_FILE
from rvm.iospec import state_shapes
from rvm.metadata import METADATA_FILE, ArtifactMetadata

from .base import Runtime, RuntimeInfo


class TensorRTRuntime(Runtime):
    backend = "tensorrt"

    def __init__(self, path, device: str = "auto", **options):
        import tensorrt as trt
        import torch
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"TensorRT engines run on an NVIDIA GPU: no CUDA device is visible "
                                     f"(torch {torch.__version__})")
        if device not in ("auto", "cuda") and not device.startswith("cuda:"):
            raise BackendUnavailable(f"a TensorRT engine runs on a CUDA device, not {device!r}: use cuda")
        self.torch = torch
        folder = Path(path)
        folder = folder.parent if folder.suffix.lower() in (".engine", ".plan") else folder
        engine_file = Path(path) if Path(path).is_file() else folder / TENSORRT_ENGINE_FILE
        if not engine_file.is_file() or not (folder / METADATA_FILE).is_file():
            raise ArtifactError(f"{folder} is not an rvm-toolkit TensorRT folder ({TENSORRT_ENGINE_FILE} and "
                                f"{METADATA_FILE})")
        metadata = ArtifactMetadata.from_json((folder / METADATA_FILE).read_text())
        self.device = torch.device(device if device.startswith("cuda:") else "cuda:0")
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_file.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{engine_file} is not a TensorRT engine for TensorRT {trt.__version__} on this GPU "
                                f"(built with {metadata.versions.get('tensorrt')} on {metadata.details.get('device')})")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        width, height = metadata.resolution
        self._state_shapes = state_shapes(metadata.variant, metadata.resolution, metadata.downsample_ratio)
        self._output_shapes = dict(zip(ONNX_OUTPUTS, [(1, 3, height, width), (1, 1, height, width),
                                                      *self._state_shapes]))
        super().__init__(RuntimeInfo(self.backend, str(self.device), metadata.precision, path=str(folder),
                                     metadata=metadata), **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None, **options) -> "TensorRTRuntime":
        """`threads` is accepted and ignored: the engine runs on the GPU."""
        return cls(path, device=device, **options)

    def _run(self, src, state, downsample_ratio):
        torch = self.torch
        with torch.cuda.stream(self.stream):
            states = state if state is not None else [torch.zeros(s, device=self.device) for s in self._state_shapes]
            src_gpu = torch.from_numpy(np.ascontiguousarray(src, np.float32)).to(self.device, non_blocking=True)
            outputs = {name: torch.empty(shape, device=self.device) for name, shape in self._output_shapes.items()}
            for name, tensor in [*zip(ONNX_INPUTS[:5], [src_gpu, *states]), *outputs.items()]:
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execution failed")
            fgr, pha = outputs["fgr"].cpu().numpy(), outputs["pha"].cpu().numpy()  # synchronises the stream
        return fgr, pha, [outputs[name] for name in ONNX_OUTPUTS[2:]]

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return [s.cpu().numpy() for s in state]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [self.torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device) for a in arrays]

    def close(self) -> None:
        self.context = self.engine = None

"""ExecuTorch backend on its Python runtime (`executorch.runtime`, the C++ runtime with XNNPACK linked in): one
frame at a time, fixed resolution, ratio baked in, both read from the program's `rvm_metadata` constant method
(written by rvm.exporters.executorch). The state is the program's r1o..r4o tensors, fed back the next frame.
"""
from typing import List, Sequence

import numpy as np

from rvm.errors import ArtifactError, BackendUnavailable, UsageError
from rvm.iospec import state_shapes
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo

METADATA_METHOD = "rvm_metadata"  # as rvm.exporters.executorch writes it
# a .pte is a flatbuffer whose file identifier (bytes 4..8) is "ET" and a schema version. Checked before loading:
# ExecuTorch 1.5 logs a foreign identifier's raw bytes, and a non-UTF-8 log line aborts the Python process
PROGRAM_IDENTIFIER = b"ET"


class ExecuTorchRuntime(Runtime):
    backend = "executorch"

    def __init__(self, path, device: str = "auto", **options):
        import torch
        from executorch.runtime import Runtime as ETRuntime
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"the ExecuTorch runtime here runs on the CPU (XNNPACK), not {device!r}: use cpu")
        self.torch = torch
        with open(path, "rb") as file:
            if file.read(8)[4:6] != PROGRAM_IDENTIFIER:
                raise ArtifactError(f"{path} is not an ExecuTorch program (no ET file identifier)")
        program = ETRuntime.get().load_program(str(path))
        if METADATA_METHOD not in program.method_names:
            raise ArtifactError(f"{path} carries no rvm-toolkit metadata (its baked resolution and ratio are unknown): "
                                f"export it with `rvm export --format executorch`")
        blob = program.load_method(METADATA_METHOD).execute([])[0]
        metadata = ArtifactMetadata.from_json(bytes(blob.tolist()).decode())
        if metadata is None or not metadata.static:
            raise ArtifactError(f"{path} does not hold rvm-toolkit metadata of a static artifact")
        self.method = program.load_method("forward")
        self.program = program  # the method runs out of the program's memory
        self._state_shapes = state_shapes(metadata.variant, metadata.resolution, metadata.downsample_ratio)
        super().__init__(RuntimeInfo(self.backend, "cpu", metadata.precision, path=str(path), metadata=metadata),
                         **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads=None, **options) -> "ExecuTorchRuntime":
        """`threads` is accepted and ignored: the Python runtime sizes XNNPACK's thread pool itself."""
        return cls(path, device=device, **options)

    def _run(self, src, state, downsample_ratio):
        if src.shape[0] != 1:
            raise UsageError(f"this ExecuTorch artifact takes one frame at a time, got a batch of {src.shape[0]}")
        torch = self.torch
        states = state if state is not None else [torch.zeros(s) for s in self._state_shapes]
        fgr, pha, *new_state = self.method.execute([torch.from_numpy(np.ascontiguousarray(src, np.float32)),
                                                    *states])
        # outputs may live in the program's planned memory, overwritten by the next call: copy them out
        return fgr.numpy().copy(), pha.numpy().copy(), [s.clone() for s in new_state]

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return [s.numpy().copy() for s in state]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [self.torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in arrays]

    def close(self) -> None:
        self.method = self.program = None

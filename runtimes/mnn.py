"""MNN backend on the `MNN` Python package (`MNN.nn` modules, `MNN.expr` variables), CPU.

Dynamic artifacts take any frame size and the ratio as an input (`[1,1,1,1]` zero states on the first frame, as the
contract says); static ones (`--static`) their one size with the ratio baked. The metadata comes from the model's
bizCode string; a dynamic MNN file converted elsewhere from the official ONNX (no metadata) runs as fp32.

Winograd convolution: MNN picks among Winograd tile sizes by default (`winograd_memory_level` 3), and its large
tiles cost float32 accuracy (alpha 3.4e-4 from PyTorch on person_a, against 1.0e-5 with level 0, the small tiles
only). Level 0 is the default here for every precision; `rvm bench` measures both (the same speed on a
2-core EPYC: 17.4 against 17.5 frames/s at 1280x720).

MNN prints to the process's stdout, which `--json` output owns: here it prints to stderr.
"""
import contextlib
import os
import sys
from typing import List, Optional, Sequence

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, BackendUnavailable, UsageError
from rvm.iospec import state_shapes
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo, SettingsSweep
from .onnxruntime import physical_cores

WINOGRAD_MEMORY_LEVEL_HINT = 3  # MNN's Interpreter::HintMode::WINOGRAD_MEMORY_LEVEL


@contextlib.contextmanager
def c_stdout_on_stderr():
    """Send to stderr what MNN's compiled code prints to file descriptor 1 (its CPU features on import, its precision
    on each runtime manager, its tools' logs)."""
    import ctypes
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)  # C stdio's buffer still holds what was printed for the redirected descriptor
        os.dup2(saved, 1)
        os.close(saved)


class MnnRuntime(Runtime):
    backend = "mnn"

    def __init__(self, path, device: str = "auto", threads: Optional[int] = None, winograd_memory_level: int = 0,
                 **options):
        with c_stdout_on_stderr():
            import MNN.expr
            import MNN.nn
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"the MNN runtime here runs on the CPU, not {device!r}: use cpu")
        self.expr = MNN.expr
        # loaded once as the file declares itself: its inputs say whether the ratio is baked, its bizCode is ours
        info = MNN.nn.load_module_from_file(str(path), [], []).get_info()
        inputs = list(info["inputNames"])
        self.static = "downsample_ratio" not in inputs
        if sorted(inputs) != sorted(ONNX_INPUTS[:5] if self.static else ONNX_INPUTS):
            raise ArtifactError(f"{path}: not an RVM MNN model: expected inputs {', '.join(ONNX_INPUTS)}, got "
                                f"{', '.join(inputs)}")
        metadata = ArtifactMetadata.from_json(info["bizCode"]) if info["bizCode"].startswith("{") else None
        if self.static and (metadata is None or not metadata.static):
            raise ArtifactError(f"{path}: a static RVM MNN model without rvm-toolkit metadata (its baked ratio and "
                                f"size): export it with `rvm export --format mnn --static`")
        self.input_names = list(ONNX_INPUTS[:5] if self.static else ONNX_INPUTS)
        config = {"backend": "CPU", "precision": "high", "numThread": threads or physical_cores()}
        with c_stdout_on_stderr():  # creating and using the manager prints its precision
            manager = MNN.nn.create_runtime_manager((config,))
            manager.set_hint(WINOGRAD_MEMORY_LEVEL_HINT, int(winograd_memory_level))
            self.module = MNN.nn.load_module_from_file(str(path), self.input_names, list(ONNX_OUTPUTS),
                                                       runtime_manager=manager)
        self.initial_shapes = [(1, 1, 1, 1)] * 4
        if self.static:
            self.initial_shapes = state_shapes(metadata.variant, metadata.resolution, metadata.downsample_ratio)
        precision = metadata.precision if metadata is not None else "fp32"
        super().__init__(RuntimeInfo(self.backend, "cpu", precision, path=str(path), metadata=metadata), **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None, winograd_memory_level: int = 0,
                  **options) -> "MnnRuntime":
        """`threads`: MNN's numThread (default: one per physical core); `winograd_memory_level`: MNN's hint, 0
        (small Winograd tiles, float32-accurate) to 3 (MNN's default)."""
        return cls(path, device=device, threads=threads, winograd_memory_level=winograd_memory_level, **options)

    @classmethod
    def settings_sweeps(cls):
        return [SettingsSweep("mnn_winograd", "MNN Winograd memory level, our fp32 export (default 0):",
                              (("winograd_memory_level", "Winograd memory level"),),
                              ({"winograd_memory_level": 0}, {"winograd_memory_level": 3}))]

    def _run(self, src, state, downsample_ratio):
        if self.static and src.shape[0] != 1:
            raise UsageError(f"this static MNN artifact takes one frame at a time, got a batch of {src.shape[0]}")
        F = self.expr
        states = state if state is not None else [np.zeros(shape, np.float32) for shape in self.initial_shapes]
        arrays = [src, *states] + ([] if self.static else [np.array([downsample_ratio], np.float32)])
        variables = [F.const(np.ascontiguousarray(a, np.float32), list(a.shape), F.NCHW) for a in arrays]
        outputs = [np.array(F.convert(v, F.NCHW).read(), np.float32) for v in self.module.forward(variables)]
        fgr, pha, *new_state = outputs
        return fgr, pha, new_state

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return list(state)

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [np.ascontiguousarray(a, np.float32) for a in arrays]

    def close(self) -> None:
        self.module = None

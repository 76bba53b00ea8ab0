"""NCNN backend on the `ncnn` Python package: CHW mats, one frame at a time, fixed resolution, ratio baked in
(read from the folder's metadata file).

fp32 artifacts run with fp16/bf16 storage and arithmetic off (ncnn turns them on by default where the CPU has
them, which costs 1e-3 of accuracy); fp16 artifacts run with them on, as on a phone.
"""
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ArtifactError, BackendError, BackendUnavailable, UsageError
from rvm.formats import NCNN_BIN_FILE, NCNN_PARAM_FILE, NCNN_PARAM_SUFFIX
from rvm.iospec import state_shapes
from rvm.metadata import METADATA_FILE, ArtifactMetadata

from .base import Runtime, RuntimeInfo


class NcnnRuntime(Runtime):
    backend = "ncnn"

    def __init__(self, path, device: str = "auto", threads: Optional[int] = None, **options):
        import ncnn
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"the NCNN runtime here runs on the CPU, not {device!r}: use cpu")
        self.ncnn = ncnn
        folder = Path(path)
        folder = folder.parent if folder.name.endswith(NCNN_PARAM_SUFFIX) else folder
        if not (folder / NCNN_PARAM_FILE).is_file() or not (folder / METADATA_FILE).is_file():
            raise ArtifactError(f"{folder} is not an rvm-toolkit NCNN folder ({NCNN_PARAM_FILE}, {NCNN_BIN_FILE} and "
                                f"{METADATA_FILE})")
        metadata = ArtifactMetadata.from_json((folder / METADATA_FILE).read_text())
        if metadata is None or not metadata.static:
            raise ArtifactError(f"{folder / METADATA_FILE} is not rvm-toolkit metadata of a static artifact")
        self.net = ncnn.Net()
        half = metadata.precision == "fp16"
        opt = self.net.opt
        opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = half
        opt.use_bf16_storage = False
        opt.num_threads = threads or os.cpu_count()
        # ncnn reports a bad file by its return code, not an exception
        for load, name in ((self.net.load_param, NCNN_PARAM_FILE), (self.net.load_model, NCNN_BIN_FILE)):
            if load(str(folder / name)) != 0:
                raise ArtifactError(f"{folder / name} is not a readable NCNN {name.rsplit('.', 1)[-1]} file: "
                                    f"export the folder again with `rvm export --format ncnn`")
        self._state_shapes = [shape[1:] for shape in state_shapes(metadata.variant, metadata.resolution,
                                                                   metadata.downsample_ratio)]
        super().__init__(RuntimeInfo(self.backend, "cpu", metadata.precision, path=str(folder), metadata=metadata),
                         **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None, **options) -> "NcnnRuntime":
        """`threads`: ncnn's opt.num_threads (default: every core)."""
        return cls(path, device=device, threads=threads, **options)

    def _run(self, src, state, downsample_ratio):
        if src.shape[0] != 1:
            raise UsageError(f"this NCNN artifact takes one frame at a time, got a batch of {src.shape[0]}")
        ncnn = self.ncnn
        states = state if state is not None else [np.zeros(s, np.float32) for s in self._state_shapes]
        # the Mats wrap these arrays without copying: they stay referenced until the extraction is done
        arrays = [np.ascontiguousarray(src[0], np.float32), *states]
        mats = [ncnn.Mat(a) for a in arrays]
        with self.net.create_extractor() as extractor:
            for name, mat in zip(ONNX_INPUTS[:5], mats):
                extractor.input(name, mat)
            out = []
            for name in ONNX_OUTPUTS:
                code, mat = extractor.extract(name)
                if code != 0:
                    raise BackendError(f"ncnn failed to compute {name} (code {code})")
                out.append(np.array(mat, np.float32))  # a copy, owned by numpy
        fgr, pha, *new_state = out
        return fgr[None], pha[None], new_state

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return [s[None] for s in state]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [np.ascontiguousarray(a[0], np.float32) for a in arrays]

    def close(self) -> None:
        self.net = None

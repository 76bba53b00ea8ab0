"""TorchScript artifacts (ours or the official downloads), loaded with plain `torch.jit.load`."""
import logging
from typing import Optional

import torch

from rvm.errors import ArtifactError
from rvm.metadata import TORCHSCRIPT_METADATA_FILE, ArtifactMetadata

from ._torch_common import TorchStateMixin, pick_device, set_threads
from .base import Runtime, RuntimeInfo, SettingsSweep

log = logging.getLogger(__name__)
PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16"}


class TorchScriptRuntime(TorchStateMixin, Runtime):
    backend = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device, metadata: Optional[ArtifactMetadata],
                 path=None,
                 freeze: bool = False, **options):
        """`freeze`: `torch.jit.freeze` the module (weights inlined as constants, conv and batch norm folded;
        outputs move by up to 4e-6). Off by default: in `rvm bench`'s TorchScript settings rows (1080p, CPU) it
        came out between -3% and +3% over seven runs, within noise, while unfrozen stays bit-exact with PyTorch."""
        self.device = device
        self.dtype = next(module.parameters()).dtype
        self.module = torch.jit.freeze(module.eval()) if freeze else module.eval()
        # the parameters' dtype is what the module computes in; metadata, when present, must agree
        precision = PRECISIONS.get(self.dtype)
        if precision is None:
            raise ArtifactError(f"{path}: TorchScript parameters are {self.dtype}, expected float32 or float16")
        if metadata is not None and metadata.precision != precision:
            log.warning("%s: metadata says %s but the parameters are %s; running in %s",
                        path, metadata.precision, precision, precision)
        super().__init__(RuntimeInfo(self.backend, str(device), precision, path=path, metadata=metadata), **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None, **options):
        """`threads`: torch's intra-op threads (process-wide); `options` go to the constructor (freeze,
        downsample_ratio...)."""
        set_threads(threads)
        torch_device = pick_device(device)
        extra_files = {TORCHSCRIPT_METADATA_FILE: ""}
        module = torch.jit.load(str(path), map_location=torch_device, _extra_files=extra_files)
        stored = extra_files[TORCHSCRIPT_METADATA_FILE]
        metadata = ArtifactMetadata.from_json(stored) if stored else None
        return cls(module, torch_device, metadata, path=str(path), **options)

    @classmethod
    def settings_sweeps(cls):
        return [SettingsSweep("torchscript_cpu_settings",
                              "TorchScript fp32 on CPU, as saved or frozen at load (default: as saved):",
                              (("freeze", "frozen"),), ({"freeze": False}, {"freeze": True}))]

    @torch.inference_mode()
    def _run(self, src, state, downsample_ratio):
        rec = state if state is not None else [None] * 4
        fgr, pha, *rec = self.module(self._to_device(src), *rec, float(downsample_ratio))
        return self._to_numpy(fgr), self._to_numpy(pha), rec

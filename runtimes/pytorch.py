"""PyTorch eager: the reference every other backend is measured against."""
from typing import Optional

import torch

from rvm.errors import UsageError
from rvm.metadata import ArtifactMetadata
from rvm.model import MattingNetwork

from ._torch_common import TorchStateMixin, pick_device, set_threads
from .base import Runtime, RuntimeInfo

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class PyTorchRuntime(TorchStateMixin, Runtime):
    backend = "pytorch"

    def __init__(self, model: MattingNetwork, device: str = "auto", precision: str = "fp32",
                 path: Optional[str] = None, **options):
        if precision not in DTYPES:
            raise UsageError(f"PyTorch precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.device, self.dtype = pick_device(device), DTYPES[precision]
        self.model = model.eval().to(self.device, self.dtype)
        checkpoint = getattr(model, "checkpoint_info", {}) or {}
        metadata = ArtifactMetadata(format=self.backend, variant=model.variant, refiner=model.refiner_name,
                                    precision=precision,
                                    checkpoint=checkpoint.get("name") or checkpoint.get("path", ""),
                                    checkpoint_sha256=checkpoint.get("sha256", ""))
        info = RuntimeInfo(self.backend, str(self.device), precision, path=path, metadata=metadata)
        super().__init__(info, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", variant: str = None, refiner: str = None,
                  threads: Optional[int] = None, **options):
        """`threads`: torch's intra-op threads (process-wide)."""
        from rvm.checkpoints import load_model
        set_threads(threads)
        model = load_model(path, variant=variant, refiner=refiner)
        return cls(model, device=device, path=str(path), **options)

    @torch.inference_mode()
    def _run(self, src, state, downsample_ratio):
        rec = state if state is not None else [None] * 4
        fgr, pha, *rec = self.model(self._to_device(src), *rec, downsample_ratio=downsample_ratio)
        return self._to_numpy(fgr), self._to_numpy(pha), rec

"""What the PyTorch and TorchScript backends share: device choice and torch<->numpy state plumbing."""
from typing import List, Optional, Sequence

import numpy as np
import torch

from rvm.errors import BackendUnavailable


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device!r} asked for, but this torch build sees no CUDA GPU: "
                                 "use --device cpu")
    return torch.device(device)


def set_threads(threads: Optional[int]) -> None:
    """torch's intra-op threads, for the whole process (torch has no per-module setting); None leaves them."""
    if threads:
        torch.set_num_threads(threads)


class TorchStateMixin:
    """States stay torch tensors on the model's device between frames."""

    device: torch.device
    dtype: torch.dtype

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return [s.float().cpu().numpy() for s in state]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype) for a in arrays]

    def _to_device(self, src: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(src).to(self.device, self.dtype, non_blocking=True)

    @staticmethod
    def _to_numpy(x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy()

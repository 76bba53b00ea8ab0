"""Run two runtimes over the same frames, each carrying its own recurrent state, and measure how far apart
they are: per frame, worst frame, whether the gap grows over time (drift through the state), and the RVM
paper's matting metrics of the candidate's alpha against the reference's.

Export validation and the parity suite both call `compare`.
"""
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional

import numpy as np

from rvm.metrics import MattingMetrics, MetricsAccumulator
from rvm.tolerances import Tolerance

# a gap below this mean alpha error is float noise whatever its trend; above it, it must not double over a clip.
# Over a short run the first frames' error is still settling (TF.js fp16 read 2.0x over 16 frames, 1.0x over 30):
# drift is judged on runs of DRIFT_MIN_FRAMES or more (parity runs 58; export validation's 8 are not judged).
DRIFT_NOISE_FLOOR = 1e-5
DRIFT_LIMIT = 2.0
DRIFT_MIN_FRAMES = 24


@dataclass
class Comparison:
    frames: int
    pha_max: float
    pha_mean: float
    fgr_max: float
    fgr_mean: float
    worst_frame: int
    drift: float  # mean alpha error of the last third of frames over that of the first third
    metrics: MattingMetrics
    pha_max_per_frame: List[float] = field(repr=False, default_factory=list)
    pha_mean_per_frame: List[float] = field(repr=False, default_factory=list)

    def failures(self, tolerance: Tolerance) -> List[str]:
        """What exceeds `tolerance` (empty when all holds), drift included."""
        problems = tolerance.failures(self.pha_max, self.fgr_max, self.pha_mean, self.fgr_mean,
                                      self.metrics.mad, self.metrics.dtssd)
        if self.drifting:
            problems.append(f"error grows over time: last third {self.drift:.2f}x the first")
        return problems

    @property
    def drifting(self) -> bool:
        return self.frames >= DRIFT_MIN_FRAMES and self.drift > DRIFT_LIMIT and self.pha_mean > DRIFT_NOISE_FLOOR

    def as_dict(self, per_frame: bool = False) -> dict:
        data = asdict(self)
        if not per_frame:
            data.pop("pha_max_per_frame")
            data.pop("pha_mean_per_frame")
        return data


def compare(reference, candidate, frames: Iterable[np.ndarray], downsample_ratio: Optional[float] = None) -> Comparison:
    """Feed the same frames (float NCHW or uint8 HWC, one at a time) to both runtimes from a fresh state."""
    reference.reset()
    candidate.reset()
    pha_max, pha_mean, fgr_max, fgr_mean = [], [], [], []
    metrics = MetricsAccumulator()
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype == np.uint8:  # compare float outputs: uint8 ones round any gap up to 1/255
            frame = np.moveaxis(frame, -1, -3).astype(np.float32) / 255
        ref = reference.step(frame, downsample_ratio)
        out = candidate.step(frame, downsample_ratio)
        pha_err = np.abs(ref["pha"] - out["pha"])
        fgr_err = np.abs(ref["fgr"] - out["fgr"])
        pha_max.append(float(pha_err.max()))
        pha_mean.append(float(pha_err.mean()))
        fgr_max.append(float(fgr_err.max()))
        fgr_mean.append(float(fgr_err.mean()))
        metrics.add(out["pha"], ref["pha"])
    if not pha_max:
        raise ValueError("compare() needs at least one frame")
    third = max(1, len(pha_mean) // 3)
    first, last = np.mean(pha_mean[:third]), np.mean(pha_mean[-third:])
    return Comparison(
        frames=len(pha_max), pha_max=max(pha_max), pha_mean=float(np.mean(pha_mean)), fgr_max=max(fgr_max),
        fgr_mean=float(np.mean(fgr_mean)), worst_frame=int(np.argmax(pha_max)),
        drift=float(last / first) if first > 0 else (0.0 if last == 0 else float("inf")),
        metrics=metrics.result(), pha_max_per_frame=pha_max, pha_mean_per_frame=pha_mean)

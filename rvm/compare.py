"""Run two runtimes over the same frames, each carrying its own recurrent state, and measure how far apart
they are: per frame, worst frame, whether the gap grows over time (drift through the state), and the RVM
paper's matting metrics of the candidate's alpha against the reference's.

Export validation and the parity suite both call `compare`.
"""
import hashlib
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

# Worst-pixel errors of quantized artifacts depend on the CPU's kernels (VNNI, AMX, AVX2 round differently) and
# flip single hair-edge pixels: a high percentile of the per-pixel error is what such rows are bounded by
ERROR_PERCENTILE = 99.9


class ErrorHistogram:
    """Per-pixel absolute errors over many frames, binned on a log scale (1% wide bins from 1e-7 to 1), so a
    percentile of millions of pixels is read to within 1% (rounded up) without keeping them."""
    FLOOR, STEP = 1e-7, 1.01
    BINS = int(np.ceil(np.log(1 / FLOOR) / np.log(STEP))) + 1

    def __init__(self):
        self.counts = np.zeros(self.BINS + 1, np.int64)
        self.largest = 0.0

    def add(self, error: np.ndarray) -> None:
        with np.errstate(divide="ignore"):
            index = np.ceil(np.log(np.asarray(error, np.float32).ravel() / self.FLOOR) / np.log(self.STEP))
        index = np.clip(np.nan_to_num(index, nan=self.BINS, neginf=0), 0, self.BINS).astype(np.int64)
        self.counts += np.bincount(index, minlength=self.BINS + 1)
        self.largest = max(self.largest, float(np.max(error)))

    def percentile(self, q: float) -> float:
        """The smallest bin edge at or above which lie at most (100 - q)% of the errors."""
        cumulative = np.cumsum(self.counts)
        index = int(np.searchsorted(cumulative, q / 100 * cumulative[-1]))
        return min(float(self.FLOOR * self.STEP ** index), self.largest)


@dataclass
class Comparison:
    frames: int
    pha_max: float
    pha_mean: float
    fgr_max: float
    fgr_mean: float
    pha_p999: float  # the ERROR_PERCENTILE-th percentile of the per-pixel absolute error over all frames
    fgr_p999: float
    worst_frame: int
    drift: float  # mean alpha error of the last third of frames over that of the first third
    metrics: MattingMetrics
    pha_max_per_frame: List[float] = field(repr=False, default_factory=list)
    pha_mean_per_frame: List[float] = field(repr=False, default_factory=list)

    def failures(self, tolerance: Tolerance) -> List[str]:
        """What exceeds `tolerance` (empty when all holds), drift included."""
        problems = tolerance.failures(self)
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


class ComparisonAccumulator:
    """A candidate's outputs beside the reference's, frame after frame (dicts with `pha` and `fgr`); `result()` is
    the Comparison over every frame added."""

    def __init__(self):
        self.pha_max, self.pha_mean, self.fgr_max, self.fgr_mean = [], [], [], []
        self.pha_errors, self.fgr_errors = ErrorHistogram(), ErrorHistogram()
        self.metrics = MetricsAccumulator()

    def add(self, candidate: dict, reference: dict) -> None:
        pha_err = np.abs(reference["pha"] - candidate["pha"])
        fgr_err = np.abs(reference["fgr"] - candidate["fgr"])
        self.pha_max.append(float(pha_err.max()))
        self.pha_mean.append(float(pha_err.mean()))
        self.fgr_max.append(float(fgr_err.max()))
        self.fgr_mean.append(float(fgr_err.mean()))
        self.pha_errors.add(pha_err)
        self.fgr_errors.add(fgr_err)
        self.metrics.add(candidate["pha"], reference["pha"])

    def result(self) -> Comparison:
        if not self.pha_max:
            raise ValueError("a comparison needs at least one frame")
        third = max(1, len(self.pha_mean) // 3)
        first, last = np.mean(self.pha_mean[:third]), np.mean(self.pha_mean[-third:])
        return Comparison(
            frames=len(self.pha_max), pha_max=max(self.pha_max), pha_mean=float(np.mean(self.pha_mean)),
            fgr_max=max(self.fgr_max), fgr_mean=float(np.mean(self.fgr_mean)),
            pha_p999=self.pha_errors.percentile(ERROR_PERCENTILE),
            fgr_p999=self.fgr_errors.percentile(ERROR_PERCENTILE),
            worst_frame=int(np.argmax(self.pha_max)),
            drift=float(last / first) if first > 0 else (0.0 if last == 0 else float("inf")),
            metrics=self.metrics.result(), pha_max_per_frame=self.pha_max, pha_mean_per_frame=self.pha_mean)


def compare(reference, candidate, frames: Iterable[np.ndarray], downsample_ratio: Optional[float] = None) -> Comparison:
    """Feed the same frames (float NCHW or uint8 HWC, one at a time) to both runtimes from a fresh state."""
    reference.reset()
    candidate.reset()
    comparison = ComparisonAccumulator()
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype == np.uint8:  # compare float outputs: uint8 ones round any gap up to 1/255
            frame = np.moveaxis(frame, -1, -3).astype(np.float32) / 255
        ref = reference.step(frame, downsample_ratio)
        comparison.add(candidate.step(frame, downsample_ratio), ref)
    return comparison.result()


class RecordedReference:
    """A reference runtime whose outputs are computed once per sequence of frames (from a reset) and replayed
    after: every row of a parity table, a bench proof or a tune is compared with the same PyTorch outputs, so
    they are computed once per (frames, ratio) instead of once per row. Prefixes are shared: the first 20 of 58
    frames replay what the 58 computed."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.outputs = {}  # hash of the frames (and ratios) since a reset -> that step's outputs
        self._prefix = hashlib.sha1()
        self._pending = []  # (frame, ratio) replayed from the cache that the runtime has not stepped through yet

    def reset(self) -> None:
        self._prefix = hashlib.sha1()
        self._pending = []
        self.runtime.reset()

    def step(self, frame: np.ndarray, downsample_ratio=None) -> dict:
        frame = np.ascontiguousarray(frame)
        self._prefix.update(f"{frame.shape}{frame.dtype}{downsample_ratio}".encode())
        self._prefix.update(frame.data)
        key = self._prefix.hexdigest()
        if key in self.outputs:
            self._pending.append((frame, downsample_ratio))
            return self.outputs[key]
        for earlier, ratio in self._pending:  # bring the runtime's state up to this frame
            self.runtime.step(earlier, ratio)
        self._pending = []
        self.outputs[key] = {name: np.array(value) for name, value in
                             self.runtime.step(frame, downsample_ratio).items()}
        return self.outputs[key]

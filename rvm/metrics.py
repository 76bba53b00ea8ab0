"""The matting metrics of the RVM paper (Lin et al., 2021), in its scaling, for one alpha against another.

Alpha is in 0..1. Per frame: MAD = mean |a - b| x 1e3; MSE = mean (a - b)^2 x 1e3; Grad = sum of squared
differences of the Gaussian-derivative gradient magnitudes (sigma 1.4, each matte min-max normalised) / 1e3;
Conn = connectivity error (Rhemann et al. 2009, thresholds in steps of 0.1, 4-connectivity, differences under 0.15
ignored) / 1e3. Over time: dtSSD = sqrt(sum(((a_t - a_t-1) - (b_t - b_t-1))^2) / pixels) x 1e2, for t >= 1.
A clip's value is the mean over its frames. Here `b` is PyTorch fp32, so each number says how far a deployed
backend is from the reference in the units the paper reports against ground truth; dtSSD shows flicker that
appears only on one backend.
"""
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_MIN_DIFFERENCE = 0.15


def mad(alpha: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(alpha - reference).mean() * 1e3)


def mse(alpha: np.ndarray, reference: np.ndarray) -> float:
    return float(((alpha - reference) ** 2).mean() * 1e3)


def _gradient_magnitude(alpha: np.ndarray) -> np.ndarray:
    low, high = float(alpha.min()), float(alpha.max())
    normalised = (alpha - low) / (high - low) if high > low else np.zeros_like(alpha)
    dy = ndimage.gaussian_filter(normalised, GRAD_SIGMA, order=(1, 0))
    dx = ndimage.gaussian_filter(normalised, GRAD_SIGMA, order=(0, 1))
    return np.hypot(dx, dy)


def grad(alpha: np.ndarray, reference: np.ndarray) -> float:
    difference = _gradient_magnitude(alpha.astype(np.float64)) - _gradient_magnitude(reference.astype(np.float64))
    return float((difference ** 2).sum() / 1e3)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)  # 4-connectivity: the default structure
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def conn(alpha: np.ndarray, reference: np.ndarray) -> float:
    """Each pixel's level is the last threshold at which it still belongs to the largest component both mattes
    share; connectivity counts how much alpha each matte puts above that level."""
    alpha, reference = alpha.astype(np.float64), reference.astype(np.float64)
    thresholds = np.arange(0, 1 + CONN_STEP, CONN_STEP)
    level = np.full(reference.shape, -1.0)
    for previous, threshold in zip(thresholds[:-1], thresholds[1:]):
        shared = _largest_component((alpha >= threshold) & (reference >= threshold))
        level[(level == -1) & ~shared] = previous
    level[level == -1] = 1.0

    def phi(matte):
        difference = matte - level
        return 1 - difference * (difference >= CONN_MIN_DIFFERENCE)
    return float(np.abs(phi(alpha) - phi(reference)).sum() / 1e3)


def dtssd(alpha: np.ndarray, previous: np.ndarray, reference: np.ndarray, reference_previous: np.ndarray) -> float:
    change = (alpha - previous) - (reference - reference_previous)
    return float(np.sqrt((change ** 2).sum() / change.size) * 1e2)


@dataclass
class MattingMetrics:
    mad: float
    mse: float
    grad: float
    conn: float
    dtssd: Optional[float]  # None for a single frame

    def as_dict(self) -> dict:
        return asdict(self)


class MetricsAccumulator:
    """Feed frame after frame (alpha `[H,W]` or `[1,H,W]` of the candidate and the reference); read the clip's means."""

    def __init__(self):
        self._sums = {"mad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0, "dtssd": 0.0}
        self.frames = 0
        self._previous = None

    def add(self, alpha: np.ndarray, reference: np.ndarray) -> None:
        alpha = np.asarray(alpha, np.float32).reshape(np.shape(alpha)[-2:])
        reference = np.asarray(reference, np.float32).reshape(np.shape(reference)[-2:])
        for name, metric in (("mad", mad), ("mse", mse), ("grad", grad), ("conn", conn)):
            self._sums[name] += metric(alpha, reference)
        if self._previous is not None:
            self._sums["dtssd"] += dtssd(alpha, self._previous[0], reference, self._previous[1])
        self._previous = (alpha, reference)
        self.frames += 1

    def result(self) -> MattingMetrics:
        if not self.frames:
            raise ValueError("no frames were added")
        means = {name: value / self.frames for name, value in self._sums.items() if name != "dtssd"}
        dt = self._sums["dtssd"] / (self.frames - 1) if self.frames > 1 else None
        return MattingMetrics(dtssd=dt, **means)

"""Every registered format and precision against PyTorch fp32 on real footage, with recurrent state, in one table.

`rvm parity` prints it; `parity_tests/` asserts it. Each artifact is taken from the artifact store (exported from the
reference model on first use, rvm.exporters.store), loaded through its format's runtime, and compared with
`rvm.compare.compare` (`prove`); peers (the official downloads) are run the same way. Rows come from the format
registry (`rvm.targets`), bounds from `rvm.tolerances`.
"""
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from rvm import machine
from rvm.compare import RecordedReference, compare
from rvm.errors import UsageError, one_line
from rvm.exporters.store import ArtifactStore
from rvm.runtimes.pytorch import PyTorchRuntime
from rvm.targets import REFERENCE, Peer, Target
from rvm.targets import targets as all_targets

log = logging.getLogger(__name__)
METRICS = ("mad", "mse", "grad", "conn", "dtssd")


@dataclass
class ParityRow:
    name: str
    format: str
    precision: str
    status: str  # "ok", "fail", "unavailable", "reference"
    reason: str = ""
    frames: int = 0
    pha_max: Optional[float] = None
    pha_mean: Optional[float] = None
    fgr_max: Optional[float] = None
    fgr_mean: Optional[float] = None
    pha_p999: Optional[float] = None  # 99.9th percentile of the per-pixel error (rvm.compare.ERROR_PERCENTILE)
    fgr_p999: Optional[float] = None
    mad: Optional[float] = None  # the RVM paper's metrics of alpha against PyTorch fp32 (see rvm.metrics)
    mse: Optional[float] = None
    grad: Optional[float] = None
    conn: Optional[float] = None
    dtssd: Optional[float] = None
    worst_frame: Optional[int] = None
    drift: Optional[float] = None
    tolerance: Optional[dict] = None
    artifact: Optional[str] = None  # where the artifact compared lies (in the artifact store, or a peer download)
    seconds: float = 0.0
    pha_mean_per_frame: List[float] = field(default_factory=list, repr=False)


def peer_path(peer: Peer, model) -> Path:
    """The peer artifact, found like a checkpoint (`$RVM_CHECKPOINT_DIR`, the cache, or downloaded)."""
    if (model.variant, model.refiner_name) != (peer.variant, peer.refiner):
        raise UsageError(f"compares with {peer.variant} / {peer.refiner} only; this model is {model.variant} / "
                         f"{model.refiner_name}")
    from rvm.checkpoints import fetch
    return fetch(peer.checkpoint)[0]


@dataclass
class Proof:
    """What artifacts are proven on: `frames` (uint8 HWC) at `downsample_ratio`, against PyTorch fp32 (`model`) run
    once over them and replayed for every row (rvm.compare.RecordedReference). Precisions that need calibration
    calibrate on `calibration` (never the clip `frames` come from); without it those rows are unavailable. `scene`:
    the frames are the sample scene, so rows are held to its bounds, and a row that cannot be proven on it
    (`Tolerance.needs_clip`) is unavailable with that reason, not exported. Artifacts come from `store` (the user's
    artifact store by default); candidates run on `device`, the reference on the CPU."""
    model: Any
    frames: Sequence[np.ndarray]
    downsample_ratio: float
    calibration: Optional[str] = None
    scene: bool = False
    device: str = "cpu"
    store: Optional[ArtifactStore] = None
    reference: RecordedReference = field(init=False, repr=False)

    def __post_init__(self):
        self.store = self.store or ArtifactStore()
        self.reference = RecordedReference(PyTorchRuntime(self.model, device="cpu"))

    def compare(self, candidate, frames: Optional[Sequence[np.ndarray]] = None, ratio: Optional[float] = None):
        """`candidate` against the reference over `frames` (default: the proof's), each carrying its state."""
        return compare(self.reference, candidate, self.frames if frames is None else frames,
                       self.downsample_ratio if ratio is None else ratio)

    def artifact(self, target: Target) -> Path:
        """The target's artifact: a peer download, or our export of it at the frames' size from the store."""
        if target.peer:
            return peer_path(target.peer, self.model)
        height, width = self.frames[0].shape[:2]
        return self.store.get(self.model, target.format.name, target.precision,
                              target.export_options((width, height), self.downsample_ratio, self.calibration))


def prove(target: Target, proof: Proof) -> ParityRow:
    """One row: the target's artifact loaded through its runtime and compared with PyTorch within its bounds."""
    started = time.perf_counter()
    row = ParityRow(target.name, target.format.name, target.precision, "unavailable")
    bounds = target.format.tolerance(target.precision, proof.model.refiner_name, scene=proof.scene)
    if proof.scene and bounds.needs_clip:
        row.reason = bounds.needs_clip
        return row
    try:
        path = proof.artifact(target)
        row.artifact = str(path)
        candidate = target.format.load(path, device=proof.device)
    except Exception as error:  # reported in the table, never silently passed
        row.reason = one_line(error)
        log.warning("%s %s: %s", target.name, target.precision, row.reason)
        return row
    try:
        with candidate:
            result = proof.compare(candidate)
    except Exception as error:  # an artifact that loads but cannot run (an op without a kernel here)
        row.status, row.reason = "fail", one_line(error)
        log.error("%s %s: %s", target.name, target.precision, row.reason)
        return row
    problems = result.failures(bounds)
    row.status, row.reason = ("fail", "; ".join(problems)) if problems else ("ok", "")
    row.frames, row.worst_frame, row.drift = result.frames, result.worst_frame, result.drift
    for name in ("pha_max", "pha_mean", "fgr_max", "fgr_mean", "pha_p999", "fgr_p999"):
        setattr(row, name, getattr(result, name))
    for name in METRICS:
        setattr(row, name, getattr(result.metrics, name))
    row.tolerance = {k: v for k, v in asdict(bounds).items()
                     if v is not None and k not in ("measured", "scene", "needs_clip")}
    row.pha_mean_per_frame = result.pha_mean_per_frame
    row.seconds = time.perf_counter() - started
    return row


def run_parity(proof: Proof, targets: Optional[Sequence[Target]] = None,
               reference_row: bool = True) -> List[ParityRow]:
    """Every target (default: every registered format and precision, and the peers) proven on `proof`."""
    targets = all_targets() if targets is None else targets
    rows = [ParityRow(REFERENCE.name, REFERENCE.name, REFERENCE.precision, "reference", reason="the reference",
                      frames=len(proof.frames))] if reference_row else []
    return rows + [prove(target, proof) for target in targets]


def _number(value, spec: str = ".2e") -> str:
    return "" if value is None else format(value, spec)


def _worst_pixel_bounds(tolerance: Optional[dict]) -> str:
    """The bounds on the worst pixels: the maxima, or for quantized rows the 99.9th percentiles."""
    if tolerance is None:
        return ""
    for key, label in (("max", "max"), ("p999", "p99.9")):
        if f"pha_{key}" in tolerance or f"fgr_{key}" in tolerance:
            return (f"{label} {_number(tolerance.get(f'pha_{key}'), '.3g') or 'none'} / "
                    f"{_number(tolerance.get(f'fgr_{key}'), '.3g') or 'none'}")
    return "none"


def to_markdown(rows: List[ParityRow]) -> str:
    lines = ["| backend | precision | status | frames | alpha max | alpha p99.9 | alpha mean | fgr max | fgr p99.9 | "
             "fgr mean | MAD | MSE | Grad | Conn | dtSSD | worst frame | drift | tolerance (worst pixels) | reason |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drift = "" if r.drift is None else f"{r.drift:.2f}x"
        metrics = " | ".join(_number(getattr(r, name), ".3g") for name in METRICS)
        lines.append(f"| {r.name} | {r.precision} | {r.status} | {r.frames or ''} | {_number(r.pha_max)} | "
                     f"{_number(r.pha_p999)} | {_number(r.pha_mean)} | {_number(r.fgr_max)} | {_number(r.fgr_p999)} | "
                     f"{_number(r.fgr_mean)} | {metrics} | {'' if r.worst_frame is None else r.worst_frame} | "
                     f"{drift} | {_worst_pixel_bounds(r.tolerance)} | {r.reason} |")
    return "\n".join(lines)


def to_json(rows: List[ParityRow], context: dict) -> dict:
    return {**context, "machine": machine.summary(), "metric_units": "MAD, MSE x1e-3; Grad, Conn /1e3; dtSSD x1e-2",
            "rows": [{k: v for k, v in asdict(r).items() if k != "pha_mean_per_frame"} for r in rows]}

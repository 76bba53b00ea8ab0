"""Every registered format and precision against PyTorch fp32 on real footage, with recurrent state, in one table.

`rvm parity` prints it; `parity_tests/` asserts it. Each artifact is exported from the same reference model into a
temporary folder, loaded through `Runtime.load`, and compared with `rvm.compare.compare`; peers (the official
downloads) are run the same way. Rows and tolerances come from the format registry (`rvm.formats`).
"""
import contextlib
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from rvm import machine
from rvm.compare import compare
from rvm.errors import UsageError, one_line
from rvm.exporters import export
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
    artifact: Optional[str] = None  # where the artifact compared lies (kept only when run_parity is given a folder)
    seconds: float = 0.0
    pha_mean_per_frame: List[float] = field(default_factory=list, repr=False)


def peer_path(peer: Peer, model) -> Path:
    """The peer artifact, found like a checkpoint (`$RVM_CHECKPOINT_DIR`, the cache, or downloaded)."""
    if (model.variant, model.refiner_name) != (peer.variant, peer.refiner):
        raise UsageError(f"compares with {peer.variant} / {peer.refiner} only; this model is {model.variant} / "
                         f"{model.refiner_name}")
    from rvm.checkpoints import fetch
    return fetch(peer.checkpoint)[0]


def run_parity(model, frames: Sequence[np.ndarray], downsample_ratio: float, targets: Sequence[Target] = None,
               folder=None, reference_row: bool = True, calibration: Optional[str] = None,
               scene: bool = False, device: str = "cpu") -> List[ParityRow]:
    """Compare each target with PyTorch fp32 (`model`) over `frames` (uint8 HWC). Artifacts are exported into
    `folder` and kept there when one is given, else into a temporary folder. Precisions that need calibration
    calibrate on `calibration` (never the clip `frames` come from); without it those rows are unavailable.
    `scene`: the frames are the sample scene, so rows are held to its bounds, and a row that cannot be proven on
    it (`Tolerance.needs_clip`) is unavailable with that reason, not exported. Candidates run on `device`; the
    reference on the CPU."""
    targets = all_targets() if targets is None else targets
    reference = PyTorchRuntime(model, device="cpu")
    height, width = frames[0].shape[:2]
    rows = [ParityRow(REFERENCE.name, REFERENCE.name, REFERENCE.precision, "reference", reason="the reference",
                      frames=len(frames))] if reference_row else []
    with contextlib.ExitStack() as stack:
        folder = folder or stack.enter_context(tempfile.TemporaryDirectory())
        for target in targets:
            started = time.perf_counter()
            row = ParityRow(target.name, target.format.name, target.precision, "unavailable")
            bounds = target.format.tolerance(target.precision, model.refiner_name, scene=scene)
            if scene and bounds.needs_clip:
                row.reason = bounds.needs_clip
                rows.append(row)
                continue
            try:
                path = peer_path(target.peer, model) if target.peer else export(
                    model, target.format.name, target.precision, folder, overwrite=True,
                    options=target.export_options((width, height), downsample_ratio, calibration))
                row.artifact = str(path)
                candidate = target.format.load(path, device=device)
            except Exception as error:  # reported in the table, never silently passed
                row.reason = one_line(error)
                log.warning("%s %s: %s", target.name, target.precision, row.reason)
                rows.append(row)
                continue
            try:
                with candidate:
                    result = compare(reference, candidate, frames, downsample_ratio)
            except Exception as error:  # an artifact that loads but cannot run (an op without a kernel here)
                row.status, row.reason = "fail", one_line(error)
                log.error("%s %s: %s", target.name, target.precision, row.reason)
                rows.append(row)
                continue
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
            rows.append(row)
    return rows


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

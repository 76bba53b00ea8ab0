"""Every backend and precision against PyTorch fp32 on real footage, with recurrent state, in one table.

`rvm parity` prints it; `parity_tests/` asserts it. Each artifact is exported from the same reference
model into a temporary folder, loaded through `runtimes.load`, and compared with `rvm.compare.compare`.
"""
import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from rvm.compare import compare
from rvm.contracts import MEAN_TOLERANCES, tolerance

log = logging.getLogger(__name__)

# (row name, backend, precision): the backend's tolerance row is used for the row
TARGETS = (
    ("torchscript", "torchscript", "fp32"),
    ("torchscript", "torchscript", "fp16"),
    ("onnx", "onnx", "fp32"),
    ("onnx", "onnx", "fp16"),
    ("onnx (official download)", "onnx", "fp32"),
    ("tf", "tf", "fp32"),
    ("tfjs", "tfjs", "int8"),
    ("coreml", "coreml", "fp16"),
    ("coreml", "coreml", "int8"),
    ("onnx", "onnx", "int8"),
    ("onnx static", "onnx", "fp32"),
    ("onnx static", "onnx", "int8"),
    ("openvino", "openvino", "fp32"),
    ("openvino", "openvino", "fp16"),
    ("openvino", "openvino", "int8"),
    ("openvino static", "openvino", "fp32"),
    ("openvino static", "openvino", "int8"),
    ("openvino (official download)", "openvino", "fp32"),
)
DEFAULT_BACKENDS = ("pytorch", "torchscript", "onnx", "tf", "tfjs", "coreml", "openvino")
OFFICIAL_ONNX_ROW = "onnx (official download)"
OFFICIAL_ROWS = (OFFICIAL_ONNX_ROW, "openvino (official download)")  # the same file, run by each backend


@dataclass
class ParityRow:
    name: str
    backend: str
    precision: str
    status: str  # "ok", "fail", "unavailable", "reference"
    reason: str = ""
    frames: int = 0
    pha_max: Optional[float] = None
    pha_mean: Optional[float] = None
    fgr_max: Optional[float] = None
    fgr_mean: Optional[float] = None
    worst_frame: Optional[int] = None
    drift: Optional[float] = None
    tolerance_max: Optional[List[float]] = None
    tolerance_mean: Optional[List[float]] = None
    seconds: float = 0.0
    pha_mean_per_frame: List[float] = field(default_factory=list, repr=False)


def official_onnx() -> Optional[Path]:
    from exporters.validate import shared_file
    return shared_file("weights", "rvm_mobilenetv3_fp32.onnx")


def run_parity(model, frames: Sequence[np.ndarray], downsample_ratio: float, backends=DEFAULT_BACKENDS,
               official_onnx_path=None, workdir=None, calibration=None) -> List[ParityRow]:
    """Compare each requested backend with PyTorch fp32 (`model`) over `frames` (uint8 HWC); int8 ONNX and
    OpenVINO rows calibrate on `calibration` (which must not be the clip `frames` come from)."""
    from runtimes.pytorch import PyTorchRuntime
    reference = PyTorchRuntime(model, device="cpu")
    height, width = frames[0].shape[:2]
    rows = [ParityRow("pytorch", "pytorch", "fp32", "reference", reason="the reference", frames=len(frames))] \
        if "pytorch" in backends else []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name, backend, precision in TARGETS:
            if backend not in backends:
                continue
            if name in OFFICIAL_ROWS and (official_onnx_path is None or model.variant != "mobilenetv3"):
                continue
            started = time.perf_counter()
            row = ParityRow(name, backend, precision, "unavailable")
            try:
                path = Path(official_onnx_path) if name in OFFICIAL_ROWS else \
                    export_for_parity(model, name, backend, precision, tmp, (width, height), downsample_ratio,
                                      calibration)
                candidate = load_runtime(path, backend)
            except Exception as error:  # reported in the table, never silently passed
                row.reason = one_line(error)
                log.warning("%s %s: %s", name, precision, row.reason)
                rows.append(row)
                continue
            with candidate:
                result = compare(reference, candidate, frames, downsample_ratio)
            problems = result.failures(backend, precision, model.refiner_name)
            row.status, row.reason = ("fail", "; ".join(problems)) if problems else ("ok", "")
            row.frames, row.worst_frame, row.drift = result.frames, result.worst_frame, result.drift
            row.pha_max, row.pha_mean, row.fgr_max, row.fgr_mean = (result.pha_max, result.pha_mean,
                                                                     result.fgr_max, result.fgr_mean)
            row.tolerance_max = list(tolerance(backend, precision, model.refiner_name))
            row.tolerance_mean = list(MEAN_TOLERANCES[(backend, precision)])
            row.pha_mean_per_frame = result.pha_mean_per_frame
            row.seconds = time.perf_counter() - started
            rows.append(row)
    return rows


def export_for_parity(model, name: str, backend: str, precision: str, folder: str, resolution, ratio: float,
                      calibration=None) -> Path:
    from exporters import ExportOptions, export
    static = name.endswith(" static")
    if precision == "int8" and backend in ("onnx", "openvino") and not calibration:
        raise ValueError("int8 rows need calibration frames: pass --calibration PATH (not the parity clip)")
    options = ExportOptions(resolution=resolution if backend == "coreml" or static else None, static=static,
                            downsample_ratio=ratio, validate=False, calibration=calibration)
    return export(model, backend, precision, Path(folder) / name.replace(" ", "_"), overwrite=True, options=options)


def load_runtime(path, backend=None):
    from runtimes import load
    return load(path, device="cpu", backend=backend)


def one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def machine() -> dict:
    import torch
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


def to_markdown(rows: List[ParityRow]) -> str:
    lines = ["| backend | precision | status | frames | alpha max | alpha mean | fgr max | fgr mean | worst frame "
             "| drift | tolerance (max) | reason |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(value):
        return "" if value is None else f"{value:.2e}"
    for r in rows:
        tol = "" if r.tolerance_max is None else f"{r.tolerance_max[0]:.0e} / {r.tolerance_max[1]:.0e}"
        drift = "" if r.drift is None else f"{r.drift:.2f}x"
        lines.append(f"| {r.name} | {r.precision} | {r.status} | {r.frames or ''} | {num(r.pha_max)} | "
                     f"{num(r.pha_mean)} | {num(r.fgr_max)} | {num(r.fgr_mean)} | "
                     f"{'' if r.worst_frame is None else r.worst_frame} | {drift} | {tol} | {r.reason} |")
    return "\n".join(lines)


def to_json(rows: List[ParityRow], context: dict) -> dict:
    from dataclasses import asdict
    return {**context, "machine": machine(),
            "rows": [{k: v for k, v in asdict(r).items() if k != "pha_mean_per_frame"} for r in rows]}


def add_arguments(parser) -> None:
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated subset of {','.join(DEFAULT_BACKENDS)} (default: all)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint name or path (default: the shared official weights if present, else "
                             "rvm_mobilenetv3)")
    parser.add_argument("--clip", help="real footage to compare on (default: the project's sample clip)")
    parser.add_argument("--frames", type=int, default=58, help="recurrent frames per backend (default 58)")
    parser.add_argument("--downsample-ratio", type=float, default=0.5,
                        help="ratio for every backend (default 0.5, on the clip upscaled 2x: the refiner is "
                             "exercised and the network sees the person at the clip's own size)")
    parser.add_argument("--calibration", metavar="PATH",
                        help="int8 ONNX/OpenVINO rows: calibration frames (a clip or folder of images, several joined by "
                             "commas), never the parity clip; without it those rows are reported unavailable")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")


def default_checkpoint() -> str:
    from exporters.validate import shared_file
    shared = shared_file("weights", "rvm_mobilenetv3_from_official_onnx.pth")
    return str(shared) if shared else "rvm_mobilenetv3"


def command(args) -> int:
    import json
    from exporters.validate import default_clip, validation_frames
    from rvm.checkpoints import load_model
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = sorted(set(backends) - set(DEFAULT_BACKENDS))
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(DEFAULT_BACKENDS)}")
    clip = Path(args.clip) if args.clip else default_clip()
    if clip is None:
        raise ValueError("no clip to compare on: pass --clip VIDEO")
    checkpoint = args.checkpoint or default_checkpoint()
    model = load_model(checkpoint)
    frames = validation_frames(args.frames, clip)  # upscaled 2x: see exporters.validate
    rows = run_parity(model, frames, args.downsample_ratio, backends, official_onnx(), calibration=args.calibration)
    if args.json:
        context = {"checkpoint": checkpoint, "clip": str(clip), "frames": len(frames),
                   "downsample_ratio": args.downsample_ratio}
        print(json.dumps(to_json(rows, context), indent=2))
    else:
        print(f"parity against PyTorch fp32: {clip.name}, {len(frames)} frames, ratio {args.downsample_ratio:g}\n")
        print(to_markdown(rows))
    return 1 if any(r.status == "fail" for r in rows) else 0

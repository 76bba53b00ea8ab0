"""`rvm tune`: the fastest proven artifact for this machine at one input size, per quality class.

Every registered format this machine can export and run is a candidate in each of its precisions, static where the
format offers it (the resolution and ratio baked in, which the runtimes run fastest). Each is exported, proven
against PyTorch fp32 over recurrent frames with its registered bounds (the user's clip, else the packaged sample
scene with the scene's bounds: `rvm.measure.parity.prove`), and the proven ones are benched side by side with
PyTorch eager and the official ONNX download, repeats taking turns (`rvm.measure.bench.interleaved_rates`). The record
(`rvm.tuning`) keeps every candidate's frames/s, alpha MAD, dtSSD and status, and the choice per quality class; the
chosen artifacts are copied beside it from the artifact store, where every candidate stays for the next tune. A
speed-against-MAD plot (PNG) is written beside it.
"""
import datetime
import logging
import os
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from rvm import formats, tuning
from rvm.errors import BackendUnavailable, MissingDependency, UsageError
from rvm.measure.bench import interleaved_rates, median_ratio, open_runtime, sample_frame
from rvm.measure.parity import Proof, prove
from rvm.targets import OFFICIAL, PEERS, REFERENCE, Target

log = logging.getLogger(__name__)

PROOF_FRAMES = 24  # recurrent frames each candidate is compared over (drift is judged from 24: rvm.compare)
BENCH_FRAMES, BENCH_REPEATS = 8, 3
CALIBRATION_FRAMES = 16


@dataclass
class Candidate:
    name: str  # the row's name: the format, "... static", or a peer download
    format: str
    precision: str
    static: bool
    status: str = "unavailable"  # "ok" (within its bounds), "fail", "unavailable"
    reason: str = ""
    peer: bool = False  # an official download: measured for the ratios, never chosen
    artifact: Optional[str] = None  # kept for the chosen ones only
    fps: Optional[float] = None
    repeat_fps: List[float] = field(default_factory=list)
    ratio_to_official: Optional[float] = None
    ratio_to_pytorch: Optional[float] = None
    mad: Optional[float] = None  # alpha against PyTorch fp32, x1e-3
    dtssd: Optional[float] = None  # x1e-2
    pha_max: Optional[float] = None
    quality: Optional[str] = None  # "exact", "fast", or None when not proven

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"


def candidates(backends: Optional[Sequence[str]] = None, precisions: Optional[Sequence[str]] = None
               ) -> Tuple[List[Target], List[Candidate]]:
    """(the rows to export and prove, the formats this machine cannot export or run, with the reason), narrowed
    to `backends` and `precisions` when given."""
    rows, skipped = [], []
    for entry in formats.FORMATS.values():
        if backends is not None and entry.name not in backends:
            continue
        try:
            entry.check_env()
            entry.require(runtime=True)
        except (MissingDependency, BackendUnavailable) as error:
            skipped += [Candidate(entry.name, entry.name, precision, entry.static != "never", reason=str(error))
                        for precision in entry.precisions]
            continue
        static = entry.static == "optional"
        name = f"{entry.name} static" if static else entry.name
        rows += [Target(name, entry, precision, static=static) for precision in entry.precisions
                 if precisions is None or precision in precisions]
        rows += [Target(peer.name, entry, peer.precision, peer) for peer in PEERS
                 if peer.format == entry.name]
    return rows, skipped


def write_calibration_frames(folder: Path, size: Tuple[int, int]) -> Path:
    """Without the user's calibration footage, int8 rows calibrate on the sample scene mirrored and played
    backwards: frames other than those compared (never the user's clip, never the exact proof frames)."""
    from PIL import Image

    from rvm.media.samples import sample_scene
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(reversed(sample_scene(CALIBRATION_FRAMES, size))):
        Image.fromarray(np.ascontiguousarray(frame[:, ::-1])).save(folder / f"{index:04d}.png")
    return folder


def proof_frames(clip, size: Tuple[int, int], count: int) -> List[np.ndarray]:
    from rvm.media.samples import resize_frames, sample_scene
    if clip is None:
        return sample_scene(count, size)
    from rvm.media.video import read_frames
    frames = read_frames(clip, count)
    if not frames:
        raise UsageError(f"--clip {clip} has no frames: pass a video or a folder of images")
    return resize_frames(frames, size)


def prove_candidates(targets: Sequence[Target], proof: Proof, progress: bool) -> List[Candidate]:
    from tqdm import tqdm
    proven = []
    for target in tqdm(targets, desc="export and prove", unit="artifact", disable=not progress):
        row = prove(target, proof)
        proven.append(Candidate(target.name, target.format.name, target.precision, target.is_static, row.status,
                                row.reason, target.peer is not None, row.artifact, mad=row.mad, dtssd=row.dtssd,
                                pha_max=row.pha_max))
        log.info("%s %s: %s %s", target.name, target.precision, row.status, row.reason)
    return proven


def bench(model, rows: List[Candidate], size: Tuple[int, int], ratio: float, device: str, frames: int,
          repeats: int) -> Optional[float]:
    """frames/s of every proven row, PyTorch eager and the peers, repeats taking turns; sets each row's fps and
    ratios; returns PyTorch's frames/s."""
    runtimes = {REFERENCE.key: open_runtime(model, REFERENCE.key, None, device)}
    measured = [row for row in rows if row.status == "ok"]
    for row in measured:
        runtimes[(row.name, row.precision)] = formats.get(row.format).load(row.artifact, device=device)
    try:
        rates = interleaved_rates(runtimes, sample_frame(*size), ratio, frames, repeats)
    finally:
        for runtime in runtimes.values():
            runtime.close()
    official = rates.get((OFFICIAL.name, OFFICIAL.precision))
    for row in measured:
        row.repeat_fps = rates[(row.name, row.precision)]
        row.fps = statistics.median(row.repeat_fps)
        row.ratio_to_pytorch = median_ratio(row.repeat_fps, rates[REFERENCE.key])
        row.ratio_to_official = median_ratio(row.repeat_fps, official) if official else None
    return statistics.median(rates[REFERENCE.key])


def classify(rows: List[Candidate]) -> dict:
    """Each proven row's quality class, and the fastest of each class (peers are measured, never chosen)."""
    for row in rows:
        if row.status == "ok":
            row.quality = "exact" if row.mad is not None and row.mad <= tuning.EXACT_MAD else "fast"
    chosen = {}
    for quality in tuning.QUALITIES:
        eligible = [r for r in rows if r.fps and not r.peer and (r.quality == "exact" or quality == "fast")]
        best = max(eligible, key=lambda r: r.fps, default=None)
        chosen[quality] = None if best is None else {"name": best.name, "precision": best.precision,
                                                     "artifact": best.artifact, "fps": best.fps}
    return chosen


@dataclass(frozen=True)
class TuneRequest:
    """What `rvm tune` is asked: the size, ratio and device to tune for, the footage to prove on, the candidates and
    how long to measure. A record keeps it (`repeatable`), so a re-tune on a changed machine repeats it."""
    resolution: Tuple[int, int]
    downsample_ratio: Union[str, float, None] = None  # None or "auto": chosen from the size
    device: str = "cpu"
    checkpoint: Optional[str] = None
    clip: Optional[str] = None  # the footage candidates are proven on (default: the sample scene)
    calibration: Optional[str] = None  # int8 calibration footage (default: the sample scene, mirrored)
    backends: Optional[Sequence[str]] = None
    precisions: Optional[Sequence[str]] = None
    frames: int = PROOF_FRAMES
    bench_frames: int = BENCH_FRAMES
    repeats: int = BENCH_REPEATS
    progress: bool = True

    def repeatable(self) -> dict:
        """The fields a re-tune repeats (the size, ratio and device are the record's own)."""
        return {"checkpoint": self.checkpoint, "clip": str(Path(self.clip).resolve()) if self.clip else None,
                "calibration": str(Path(self.calibration).resolve()) if self.calibration else None,
                "backends": list(self.backends) if self.backends else None,
                "precisions": list(self.precisions) if self.precisions else None, "frames": self.frames,
                "bench_frames": self.bench_frames, "repeats": self.repeats}


def tune(request: TuneRequest) -> dict:
    """Tune this machine at `request.resolution` and write the record (returned). Nothing is left half-written:
    the work happens in a temporary folder, and the record and its artifacts replace the old ones only when
    complete."""
    from rvm.checkpoints import DEFAULT_CHECKPOINT, load_model
    resolution = (int(request.resolution[0]), int(request.resolution[1]))
    ratio = tuning.resolve_ratio(resolution, request.downsample_ratio)
    device = tuning.resolve_device(request.device)
    facts = tuning.fingerprint()
    key = tuning.fingerprint_key(facts)
    path = tuning.record_path(key, resolution, ratio, device)
    model = load_model(request.checkpoint or DEFAULT_CHECKPOINT)
    targets, skipped = candidates(request.backends, request.precisions)
    if not targets:
        raise UsageError("no candidate format can be exported and run here: see `rvm env`, and install the extras")
    clip = request.clip
    frames_compared = proof_frames(clip, resolution, request.frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_work(path.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{path.stem}-pid{os.getpid()}-", dir=path.parent))
    try:
        calibration = request.calibration
        if calibration is None:
            calibration = str(write_calibration_frames(work / "calibration", resolution))
            calibration_note = "the sample scene, mirrored and reversed"
        else:
            calibration_note = str(calibration)
        rows = prove_candidates(targets, Proof(model, frames_compared, ratio, calibration, clip is None, device),
                                request.progress)
        log.info("benching %d proven candidates at %dx%d", sum(r.status == "ok" for r in rows), *resolution)
        pytorch_fps = bench(model, rows, resolution, ratio, device, request.bench_frames, request.repeats)
        chosen = classify(rows)
        rows.sort(key=lambda r: (r.fps is None, -(r.fps or 0)))
        record = {"schema": tuning.SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "fingerprint": facts, "key": key, "resolution": list(resolution), "downsample_ratio": ratio,
                  "device": device, "footage": str(Path(clip).resolve()) if clip else "the sample scene",
                  "calibration": calibration_note, "proof_frames": len(frames_compared),
                  # what was asked, so a re-tune on a changed machine repeats this tune (`tuned_model`)
                  "request": request.repeatable(),
                  "bench": {"frames": request.bench_frames, "repeats": request.repeats, "pytorch_fps": pytorch_fps},
                  "candidates": [asdict(r) for r in rows + skipped], "choice": chosen}
        return install(record, work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tuned_model(model: str, size: Callable[[], Tuple[int, int]], downsample_ratio="auto", device: str = "auto"
                ) -> str:
    """What `--model` runs: `model` itself, or for `auto[:fast|:exact]` the artifact this machine's tuning record
    chose for the input size `size()` gives (called only then: it may open a camera), tuned first (once, with
    progress, repeating the last tune at that size) when there is no record. The one `auto` lookup of convert,
    batch and live."""
    if tuning.parse_auto(model) is None:
        return model
    return str(tuning.resolve(model, size(), downsample_ratio, device,
                              tune_missing=lambda **asked: tune(TuneRequest(**asked))))


def remove_abandoned_work(folder: Path) -> None:
    """Work folders of tunes killed before they could clean up (their process is gone): a tune interrupted by a
    signal leaves its exports behind, never a record."""
    for work in folder.glob(".*-pid*-*"):
        try:
            pid = int(work.name.rsplit("-pid", 1)[1].split("-", 1)[0])
            os.kill(pid, 0)  # raises when no such process exists
        except ProcessLookupError:
            log.info("removing %s, left by a tune that was killed", work)
            shutil.rmtree(work, ignore_errors=True)
        except (ValueError, IndexError, OSError):  # not ours, or a process we may not signal: still alive
            continue


def install(record: dict, work: Path, path: Path) -> dict:
    """Copy the chosen artifacts from the artifact store next to the record (clearing the store keeps them), point
    the record at them, write the plot, then the record (last, so a record on disk always has its artifacts)."""
    keep = path.with_suffix("")  # the folder of this record's artifacts
    staged = work / "keep"
    staged.mkdir()
    moved = {}
    for chosen in record["choice"].values():
        if chosen and chosen["artifact"] not in moved:
            source = Path(chosen["artifact"])
            moved[chosen["artifact"]] = str(keep / source.name)
            copy(source, staged / source.name)
            for sibling in source.parent.glob(source.name + ".*"):  # its I/O spec
                copy(sibling, staged / sibling.name)
    for chosen in record["choice"].values():
        if chosen:
            chosen["artifact"] = moved[chosen["artifact"]]
    for row in record["candidates"]:
        row["artifact"] = moved.get(row["artifact"])
    if keep.exists():
        shutil.rmtree(keep)
    shutil.move(str(staged), keep)
    write_plot(record, path.with_suffix(".png"))
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(_json(record))
    os.replace(temporary, path)
    record["path"] = str(path)
    return record


def copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def _json(record: dict) -> str:
    import json
    return json.dumps(record, indent=2, default=str)


def to_markdown(record: dict) -> str:
    width, height = record["resolution"]
    lines = [f"Tuned {width}x{height}, ratio {record['downsample_ratio']:g}, {record['device']}, on "
             f"{record['fingerprint']['cpu']} ({record['fingerprint']['cores']} cores), proven on "
             f"{record['footage']} ({record['proof_frames']} frames); PyTorch eager "
             f"{record['bench']['pytorch_fps']:.2f} frames/s", "",
             "| candidate | precision | status | frames/s | x official fp32 | x PyTorch | alpha MAD | dtSSD | class | "
             "note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in record["candidates"]:
        cells = [row["name"], row["precision"], row["status"],
                 _fmt(row["fps"], ".2f"), _fmt(row["ratio_to_official"], ".2f"), _fmt(row["ratio_to_pytorch"], ".2f"),
                 _fmt(row["mad"], ".3g"), _fmt(row["dtssd"], ".3g"), row["quality"] or "", row["reason"][:90]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for quality in tuning.QUALITIES:
        chosen = record["choice"].get(quality)
        lines.append(f"auto:{quality}: " + (f"{chosen['name']} {chosen['precision']} ({chosen['fps']:.2f} frames/s) "
                                            f"{chosen['artifact']}" if chosen else "none proven"))
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def show(markdown: bool = True) -> str:
    """What `rvm tune --show` prints: every record in the cache, this machine's marked current."""
    key = tuning.fingerprint_key(tuning.fingerprint())
    found = list(tuning.records())
    if not found:
        return f"no tuning records in {tuning.tuning_dir()}: run `rvm tune --resolution WIDTHxHEIGHT`"
    parts = []
    for path, record in found:
        state = "this machine" if record.get("key") == key else "another machine or package set (not used here)"
        parts.append(f"## {path} ({state}; {record.get('created', '')})\n\n{to_markdown(record)}")
    return "\n\n".join(parts)


# ---- the picture -------------------------------------------------------------------------------------------
PLOT_SIZE = (960, 600)
MAD_FLOOR = 1e-6  # fp32 rows reach ~1e-5: the log axis starts here
MARGIN = (90, 40, 40, 70)  # left, top, right, bottom
COLOURS = {"exact": (30, 130, 60), "fast": (40, 90, 200), "fail": (200, 40, 40), "peer": (120, 120, 120)}


def write_plot(record: dict, path: Path) -> Path:
    """Frames/s (up) against alpha MAD (right, log scale): the proven rows, the failed ones crossed, the official
    download in grey, PyTorch eager as a dashed line, the `exact` limit as a vertical one."""
    from PIL import Image, ImageDraw
    rows = [r for r in record["candidates"] if r["fps"] or (r["status"] == "fail" and r["mad"] is not None)]
    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN[0], MARGIN[1], PLOT_SIZE[0] - MARGIN[2], PLOT_SIZE[1] - MARGIN[3]
    mads = [max(r["mad"], MAD_FLOOR) for r in rows if r["mad"] is not None] + [tuning.EXACT_MAD]
    lo, hi = np.floor(np.log10(min(mads))), np.ceil(np.log10(max(mads)) + 1e-9)
    hi = max(hi, lo + 1)
    top_fps = max([r["fps"] or 0 for r in rows] + [record["bench"]["pytorch_fps"]]) * 1.15

    def x_of(mad):
        return left + (np.log10(max(mad, MAD_FLOOR)) - lo) / (hi - lo) * (right - left)

    def y_of(fps):
        return bottom - fps / top_fps * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline="black")
    for exponent in range(int(lo), int(hi) + 1):
        x = x_of(10.0 ** exponent)
        draw.line((x, bottom, x, bottom + 5), fill="black")
        draw.text((x - 12, bottom + 8), f"1e{exponent}", fill="black")
    for step in np.linspace(0, top_fps, 6)[:-1]:
        draw.line((left - 5, y_of(step), left, y_of(step)), fill="black")
        draw.text((left - 45, y_of(step) - 6), f"{step:.1f}", fill="black")
    width, height = record["resolution"]
    draw.text((left, 10), f"rvm tune {width}x{height} ratio {record['downsample_ratio']:g} ({record['device']}): "
                          f"frames/s against alpha MAD vs PyTorch fp32 (x1e-3, log)", fill="black")
    draw.text((left + (right - left) // 2 - 80, PLOT_SIZE[1] - 25), "alpha MAD (x1e-3), log scale", fill="black")
    draw.text((5, top - 20), "frames/s", fill="black")
    x = x_of(tuning.EXACT_MAD)
    for y in range(top, bottom, 8):
        draw.line((x, y, x, y + 4), fill=COLOURS["exact"])
    draw.text((x + 4, top + 4), "exact", fill=COLOURS["exact"])
    y = y_of(record["bench"]["pytorch_fps"])
    for x0 in range(left, right, 10):
        draw.line((x0, y, x0 + 5, y), fill="black")
    draw.text((right - 120, y - 14), "PyTorch eager fp32", fill="black")
    for row in rows:
        x = x_of(row["mad"] if row["mad"] is not None else MAD_FLOOR)
        if row["status"] == "fail":
            y = bottom - 8
            draw.line((x - 5, y - 5, x + 5, y + 5), fill=COLOURS["fail"], width=2)
            draw.line((x - 5, y + 5, x + 5, y - 5), fill=COLOURS["fail"], width=2)
        else:
            y = y_of(row["fps"])
            colour = COLOURS["peer"] if row["peer"] else COLOURS[row["quality"]]
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
        draw.text((x + 7, y - 7), f"{row['name']} {row['precision']}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

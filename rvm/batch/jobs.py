"""What a batch is, whatever runs it: the `BatchRequest`, the `Job`s planned from its inputs or manifest (a job is
the batch's `ConvertRequest` for one input, its outputs named after it), the ledger that records each job's state
so that a re-run skips what is done, and the clean-up of what a killed worker left half-written."""
import csv
import hashlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from glob import glob, has_magic
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from rvm.errors import UsageError
from rvm.formats import IMAGE_SUFFIXES
from rvm.media.request import OUTPUT_KINDS, ConvertRequest

DEFAULT_RETRIES = 2
# the `ConvertRequest` fields a manifest row may set for its job; the rest (model, progress, overwrite...) belong
# to the batch
JOB_OPTIONS = ("output_type", "background", "downsample_ratio", "input_resize", "output_video_mbps", "seq_chunk")
# the files of an input folder taken as videos (outputs are written in fewer containers: rvm.media.pipeline)
INPUT_VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v", ".webm", ".avi")
STATE_FOLDER = ".rvm-batch"  # in the output folder: the ledger, segment parts
# what `convert_video`'s sinks leave when their process dies: `.NAME.partial-XXXXXXXX[.suffix]` (and `.old-` for
# the replaced folder of an overwrite); removed before a job runs again
PARTIAL = re.compile(r"^\.(?P<name>.+)\.(partial|old)-[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


class BatchError(UsageError):
    """A batch request that cannot start (bad manifest, no input, unwritable folder...): one line, exit 2."""


class JobFailed(Exception):
    """One attempt of one job failed; the message is the one-line reason recorded in the ledger."""


# ---- the request and its jobs --------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchRequest:
    """Many conversions with one model. `convert` is the request every job runs (model, device, output type,
    background, ratio, resize, bitrate, seq_chunk; `overwrite` replaces outputs that exist before the first run,
    `progress` shows the batch's bar) without input or output paths: each job's input is one of `inputs` (files,
    globs, folders) or a `manifest` row (CSV/JSONL: input, outputs by kind, JOB_OPTIONS), its outputs
    `<stem>.<kind>.<video_format>` (a folder for png_sequence; RGBA `.<rgba_format>`) in `output_dir`, for the kinds
    in `outputs`. Executors: local worker processes (`workers` x `threads`) or Ray (`use_ray`, `ray_address`).
    `segment_frames`: clips longer than this run as segments (None: DEFAULT_SEGMENT_FRAMES; 0: never)."""
    inputs: Sequence[str] = ()
    output_dir: Union[str, Path] = "."
    convert: ConvertRequest = ConvertRequest()
    manifest: Optional[Union[str, Path]] = None
    outputs: Sequence[str] = ("composition",)
    video_format: str = "mp4"
    rgba_format: str = "mov"
    retries: int = DEFAULT_RETRIES
    workers: Optional[int] = None
    threads: Optional[int] = None
    use_ray: bool = False
    ray_address: Optional[str] = None
    segment_frames: Optional[int] = None


@dataclass(frozen=True)
class Job:
    request: ConvertRequest  # one input, its outputs (kind -> absolute path), the batch's model and options
    segment_frames: int = 0  # run clips longer than this as segments of this many frames (0: whole)
    work_dir: str = ""  # the batch's state folder, where segment parts wait to be joined

    @property
    def input(self) -> str:
        """The absolute path of a video file or image folder."""
        return self.request.input_source

    @property
    def outputs(self) -> Dict[str, str]:
        return self.request.outputs

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def options(self) -> dict:
        """The request's JOB_OPTIONS that are set."""
        return {name: value for name in JOB_OPTIONS if (value := getattr(self.request, name)) is not None}

    @property
    def id(self) -> str:
        """Stable across runs of the same command: what is converted, how, and by which model."""
        key = json.dumps([self.input, self.outputs, self.options, self.model], sort_keys=True)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return Path(self.input).name

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Job":
        return cls(**{**data, "request": ConvertRequest(**data["request"])})


def _expand_inputs(inputs: Sequence[str]) -> List[Path]:
    """Files, globs and folders (their videos, or the folder itself when it is an image sequence)."""
    found: List[Path] = []
    for text in inputs:
        if has_magic(text):
            matches = sorted(Path(p) for p in glob(text, recursive=True))
            if not matches:
                raise BatchError(f"the pattern {text!r} matches no file: check the path and the quoting")
            found += [p for p in matches if p.is_file() or _is_image_folder(p)]
            continue
        path = Path(text)
        if not path.exists():
            raise BatchError(f"input {text} does not exist: pass existing video files, folders or globs")
        if path.is_dir() and not _is_image_folder(path):
            videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in INPUT_VIDEO_SUFFIXES)
            if not videos:
                raise BatchError(f"folder {text} has no videos ({', '.join(INPUT_VIDEO_SUFFIXES)}) and no images: "
                                 f"pass a folder of videos or of frames")
            found += videos
        else:
            found.append(path)
    return found


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def _default_outputs(stem: str, output_dir: Path, kinds: Sequence[str], output_type: str, video_format: str,
                     rgba_format: str) -> Dict[str, str]:
    """`clip.alpha.mp4`, `clip.composition/` (png_sequence), `clip.rgba.mov`... in the output folder."""
    outputs = {}
    for kind in kinds:
        if kind == "rgba":
            suffix = f".{rgba_format}"
        else:
            suffix = "" if output_type == "png_sequence" else f".{video_format}"
        outputs[kind] = str((output_dir / f"{stem}.{kind}{suffix}").absolute())
    return outputs


def read_manifest(path) -> List[dict]:
    """Rows of a CSV (header row) or JSONL manifest: `input`, output paths by kind, per-job options."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise BatchError(f"cannot read manifest {path}: {getattr(error, 'strerror', None) or error}: "
                         f"pass a readable CSV or JSONL file") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise BatchError(f"manifest {path} line {number} is not JSON ({error.msg}): one JSON object "
                                 f"per line") from None
            if not isinstance(row, dict):
                raise BatchError(f"manifest {path} line {number} is not a JSON object: one object per line")
            rows.append(row)
    elif path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        rows = [{k.strip(): v.strip() for k, v in row.items() if k is not None and v not in (None, "")}
                for row in reader]
    else:
        raise BatchError(f"manifest {path} must be .csv, .tsv or .jsonl")
    known = {"input", *OUTPUT_KINDS, *JOB_OPTIONS}
    for number, row in enumerate(rows, 1):
        unknown = sorted(set(row) - known)
        if unknown:
            raise BatchError(f"manifest {path} row {number} has unknown column(s) {', '.join(unknown)}: "
                             f"use input, {', '.join(OUTPUT_KINDS)}, {', '.join(JOB_OPTIONS)}")
        if not row.get("input"):
            raise BatchError(f"manifest {path} row {number} has no input: every row needs an input path")
    if not rows:
        raise BatchError(f"manifest {path} lists no jobs")
    return rows


def _option(name: str, value):
    """A manifest cell (text in CSV, typed in JSONL) as the `ConvertRequest` field it names."""
    if value is None or value == "":
        return None
    try:
        if name == "input_resize":
            parts = value if isinstance(value, (list, tuple)) else re.split(r"[x, ]+", str(value).strip())
            size = tuple(int(p) for p in parts)
            if len(size) != 2:
                raise ValueError
            return size
        if name == "seq_chunk":
            return int(value)
        if name == "output_video_mbps":
            return float(value)
        if name == "downsample_ratio":
            return value if value == "auto" else float(value)
        if name == "output_type" and value not in ("video", "png_sequence"):
            raise ValueError
    except (TypeError, ValueError):
        raise BatchError(f"manifest value {value!r} is not a valid {name}") from None
    return value


def plan_jobs(request: BatchRequest) -> List[Job]:
    """The jobs of a batch; raises BatchError (nothing is written) on input that cannot start."""
    output_dir = Path(request.output_dir).absolute()
    kinds, video_format, rgba_format = request.outputs, request.video_format, request.rgba_format
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if unknown or not kinds:
        raise BatchError(f"unknown output kind(s) {', '.join(unknown) or '(none)'}: "
                         f"choose from {', '.join(OUTPUT_KINDS)}")
    if rgba_format not in ("mov", "webm"):
        raise BatchError(f"RGBA outputs are .mov (ProRes 4444) or .webm (VP9), not .{rgba_format}")
    if request.convert.input_source is not None or request.convert.outputs:
        raise BatchError("a batch names each job's input and outputs: pass inputs, a manifest and output kinds, "
                         "not a request with an input or output paths")
    # what every job runs: workers report progress to the batch's bar, and replace what a killed attempt left
    base = replace(request.convert, progress=False, overwrite=True,
                   background=_background(request.convert.background, Path.cwd()))
    work_dir = str(output_dir / STATE_FOLDER)
    jobs = []
    for path in _expand_inputs(request.inputs):
        outputs = _default_outputs(path.stem, output_dir, kinds, base.output_type, video_format, rgba_format)
        jobs.append(Job(replace(base, input_source=str(path.absolute())).with_outputs(outputs),
                        request.segment_frames, work_dir))
    if request.manifest is not None:
        folder = Path(request.manifest).absolute().parent
        for row in read_manifest(request.manifest):
            job = replace(base, **{k: _option(k, row[k]) for k in JOB_OPTIONS if row.get(k) not in (None, "")})
            if row.get("background") not in (None, ""):
                job = replace(job, background=_background(job.background, folder))
            source = folder / str(row["input"])  # a missing input fails as that job, the others go on
            named = {k: str(output_dir / str(row[k])) for k in OUTPUT_KINDS if row.get(k)}
            outputs = named or _default_outputs(source.stem, output_dir, kinds, job.output_type, video_format,
                                                rgba_format)
            jobs.append(Job(replace(job, input_source=str(source)).with_outputs(outputs), request.segment_frames,
                            work_dir))
    if not jobs:
        raise BatchError("no input: pass video files, folders or globs, or --manifest FILE")
    owners: Dict[str, Job] = {}
    for job in jobs:
        for path in job.outputs.values():
            if path in owners:
                raise BatchError(f"{owners[path].input} and {job.input} both write {path}: rename one input or "
                                 f"give the outputs in a manifest")
            owners[path] = job
    return jobs


# ---- the ledger ------------------------------------------------------------------------------------

LEDGER_NAME = "ledger.jsonl"


def _background(value, folder: Path):
    """A background file as an absolute path (workers, Ray actors above all, may run in another folder): relative
    to `folder` (the manifest's, or the current one for --background), else to the current folder; a colour (or
    a file that is nowhere) stays as it is, for `convert_video` to judge."""
    if not isinstance(value, (str, Path)):
        return value
    for candidate in (folder / value, Path(value)):
        if candidate.exists():
            return str(candidate.absolute())
    return value


def ledger_path(output_dir) -> Path:
    """Where a batch writing to `output_dir` keeps its ledger."""
    return Path(output_dir) / STATE_FOLDER / LEDGER_NAME


class Ledger:
    """Append-only JSON lines, one record per state change; the last record of a job is its state. Each line is
    flushed and fsynced, and a torn last line (the driver killed while writing) is ignored on reading."""

    def __init__(self, path: Path):
        self.path = path
        self.latest: Dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.latest[record["job"]] = record
        self._lock = threading.Lock()
        self._file = None

    def state(self, job: Job) -> Optional[str]:
        record = self.latest.get(job.id)
        return None if record is None else record["state"]

    def record(self, job: Job, state: str, **fields) -> dict:
        record = {"job": job.id, "input": job.input, "state": state, "time": round(time.time(), 3), **fields}
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a")
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.latest[job.id] = record
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def remove_partials(job: Job) -> List[Path]:
    """The temporaries a killed worker left for this job's outputs (and its unfinished segment parts)."""
    removed = []
    for output in job.outputs.values():
        output = Path(output)
        if not output.parent.is_dir():
            continue
        for entry in output.parent.iterdir():
            match = PARTIAL.match(entry.name)
            if match and match.group("name") in (output.name, output.stem):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed

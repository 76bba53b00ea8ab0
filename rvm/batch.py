"""`rvm batch` / `batch_convert`: many conversions, on this machine's worker processes or on a Ray cluster.

One job model for every executor: a `Job` names an input, its outputs and its `convert_video` options. A
`Worker` loads the model once and runs job after job with `convert_video` (the one matting path). The driver
hands jobs to executor slots (a worker process here, a Ray actor there: see `rvm.batch_ray`), and alone writes
the ledger, an append-only JSON-lines file in the output folder: a job is `running`, then `done` or `failed`
(with a one-line reason). Re-running the same command skips `done` jobs and redoes the rest; a failed attempt is
retried a bounded number of times, at the back of the queue, while the other jobs go on.

Nothing half-written survives: `convert_video` writes under temporary names and renames when complete; a worker
killed mid-job leaves its temporaries behind, and the driver removes them before the job runs again (or when the
batch is interrupted). Long clips run as segments of `segment_frames` frames whose recurrent state is carried
across each boundary (`rvm.batch_segments`), so a crash near the end costs one segment, not the clip.
"""
import contextlib
import csv
import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from glob import glob, has_magic
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from tqdm import tqdm

from .errors import UsageError
from .video import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("composition", "alpha", "foreground", "rgba")
# the `convert_video` options a job may set; the rest (runtime, progress, overwrite...) belong to the batch
JOB_OPTIONS = ("output_type", "background", "downsample_ratio", "input_resize", "output_video_mbps", "seq_chunk")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v", ".webm", ".avi")
STATE_FOLDER = ".rvm-batch"  # in the output folder: the ledger, segment parts
LEDGER_NAME = "ledger.jsonl"
SUMMARY_NAME = "rvm-batch-summary.json"
DEFAULT_RETRIES = 2
# 2 workers x 1 thread converted 1.1-1.3x the frames/s of 1 worker x 2 threads once running on this 2-core machine
# (README, "Batch"): each conversion is a pipeline whose decode and encode threads leave a lone model idle part of
# the time, and a second worker fills the gaps
THREADS_PER_WORKER = 1
PROGRESS_EVERY_S = 0.5  # how often a worker reports frames, and the ledger records them
# what `convert_video`'s sinks leave when their process dies: `.NAME.partial-XXXXXXXX[.suffix]` (and `.old-` for
# the replaced folder of an overwrite); removed before a job runs again
PARTIAL = re.compile(r"^\.(?P<name>.+)\.(partial|old)-[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


class BatchError(UsageError):
    """A batch request that cannot start (bad manifest, no input, unwritable folder...): one line, exit 2."""


class JobFailed(Exception):
    """One attempt of one job failed; the message is the one-line reason recorded in the ledger."""


# ---- jobs ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    input: str  # absolute path of a video file or image folder
    outputs: Dict[str, str]  # output kind -> absolute path
    options: Dict[str, Any] = field(default_factory=dict)  # `convert_video` keyword options (JOB_OPTIONS)
    model: str = ""  # the artifact or checkpoint every job of the batch runs
    segment_frames: int = 0  # run clips longer than this as segments of this many frames (0: whole)
    work_dir: str = ""  # the batch's state folder, where segment parts wait to be joined

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
        return cls(**data)


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
            videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not videos:
                raise BatchError(f"folder {text} has no videos ({', '.join(VIDEO_SUFFIXES)}) and no images: "
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
    """A manifest cell (text in CSV, typed in JSONL) as the `convert_video` option it names."""
    if value is None or value == "":
        return None
    try:
        if name == "input_resize":
            parts = value if isinstance(value, (list, tuple)) else re.split(r"[x, ]+", str(value).strip())
            size = [int(p) for p in parts]
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


def plan_jobs(inputs: Sequence[str] = (), output_dir=".", manifest=None, outputs: Sequence[str] = ("composition",),
              output_type: str = "video", video_format: str = "mp4", rgba_format: str = "mov",
              options: Optional[dict] = None, model: str = "", segment_frames: int = 0) -> List[Job]:
    """The jobs of a batch; raises BatchError (nothing is written) on input that cannot start."""
    output_dir = Path(output_dir).absolute()
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown or not outputs:
        raise BatchError(f"unknown output kind(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(OUTPUT_KINDS)}")
    if rgba_format not in ("mov", "webm"):
        raise BatchError(f"RGBA outputs are .mov (ProRes 4444) or .webm (VP9), not .{rgba_format}")
    base = {k: v for k, v in (options or {}).items() if v is not None}
    base["output_type"] = output_type
    work_dir = str(output_dir / STATE_FOLDER)
    jobs = []
    for path in _expand_inputs(inputs):
        jobs.append(Job(str(path.absolute()), _default_outputs(path.stem, output_dir, outputs, output_type,
                                                             video_format, rgba_format), dict(base), model,
                        segment_frames, work_dir))
    if manifest is not None:
        folder = Path(manifest).absolute().parent
        for row in read_manifest(manifest):
            job_options = dict(base)
            job_options.update({k: _option(k, row[k]) for k in JOB_OPTIONS if row.get(k) not in (None, "")})
            source = folder / str(row["input"])  # a missing input fails as that job, the others go on
            named = {k: str(output_dir / str(row[k])) for k in OUTPUT_KINDS if row.get(k)}
            job_outputs = named or _default_outputs(source.stem, output_dir, outputs, job_options["output_type"],
                                                    video_format, rgba_format)
            jobs.append(Job(str(source), job_outputs, job_options, model, segment_frames, work_dir))
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


# ---- the worker: one model, job after job ------------------------------------------------------------

class Worker:
    """Loads the model once; `run` converts one job with `convert_video` and reports its frames as they complete."""

    def __init__(self, model: str, device: str = "auto", threads: Optional[int] = None):
        import torch

        from .runtimes import runtime_class
        if threads:
            torch.set_num_threads(threads)
        runtime = runtime_class(model)
        options = {"intra_op_threads": threads} if runtime.backend == "onnx" and threads else {}
        self.runtime = runtime.from_path(model, device=device, **options)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job: Job, emit: Callable[[str, Any], None]) -> dict:
        from .batch_segments import convert_job
        emit("started", {"worker": self.name, "pid": os.getpid(), "host": socket.gethostname()})
        frames, last = 0, 0.0

        def on_frames(count: int) -> None:
            nonlocal frames, last
            frames += count
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                emit("frames", frames)

        started = time.perf_counter()
        try:
            summary = convert_job(job, self.runtime, on_frames)
        except Exception as error:  # the job failed, the worker lives on
            raise JobFailed(_one_line(error)) from None
        seconds = time.perf_counter() - started
        emit("frames", frames)
        return {"frames": summary["frames"], "seconds": round(seconds, 3),
                "frames_per_second": round(summary["frames"] / seconds, 2) if seconds else 0.0,
                "segments": summary["segments"], "reused_segments": summary["reused_segments"],
                "join_seconds": summary["join_seconds"],
                "worker": self.name, "backend": self.runtime.backend, "device": self.runtime.info.device}

    def close(self) -> None:
        self.runtime.close()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {text}"


# ---- local executor: worker processes ------------------------------------------------------------------

_ENV_LOCK = threading.Lock()
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _thread_env(threads: Optional[int]):
    """The environment a worker process starts with: OpenMP reads its thread count once, at load, and applies it
    to every thread, where `torch.set_num_threads` covers only the calling one: without it the decode and encode
    threads of each conversion ran torch ops on every core (2 workers: 26 instead of 37 frames/s here; Ray sets
    the same variables for its actors)."""
    if not threads:
        yield
        return
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in THREAD_ENV}
        os.environ.update({name: str(threads) for name in THREAD_ENV})
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _process_main(conn, model: str, device: str, threads: Optional[int]) -> None:
    """A worker process: jobs come in over `conn`, events go out. Ctrl-C is the driver's to handle; SIGTERM
    unwinds the job so `convert_video` removes its temporaries."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    _end_with_parent()
    try:
        _serve(conn, model, device, threads)
    except KeyboardInterrupt:  # the driver's SIGTERM: `convert_video` has removed its temporaries on the way out
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _serve(conn, model: str, device: str, threads: Optional[int]) -> None:
    try:
        worker, load_error = Worker(model, device, threads), None
    except Exception as error:
        worker, load_error = None, f"cannot load model {model}: {_one_line(error)}"
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the driver is gone
            return
        if job is None:
            return
        if worker is None:
            conn.send(("failed", load_error))
            continue
        try:
            conn.send(("done", worker.run(Job.from_dict(job), lambda kind, payload: conn.send((kind, payload)))))
        except JobFailed as error:
            conn.send(("failed", str(error)))


def _end_with_parent() -> None:
    """SIGTERM to this worker when the driver dies however it dies, so no worker converts on for nobody (a
    watchdog, not PR_SET_PDEATHSIG, which fires when the driver *thread* that started the worker ends)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="rvm-batch-watchdog", daemon=True).start()


class ProcessSlot:
    """One worker process (spawned, so no state is shared with the driver), restarted when it dies."""

    def __init__(self, index: int, model: str, device: str, threads: Optional[int]):
        self.index, self.model, self.device, self.threads = index, model, device, threads
        self.process = None
        self.conn = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_process_main, args=(child, self.model, self.device, self.threads),
                                       name=f"rvm-batch-worker-{self.index}", daemon=True)
        with _thread_env(self.threads):
            self.process.start()
        child.close()

    def run(self, job: Job, on_event: Callable[[str, Any], None]) -> dict:
        if self.process is None or not self.process.is_alive():
            self._start()
        process, conn = self.process, self.conn  # `stop` (on Ctrl-C, from the main thread) may clear the slot's
        conn.send(job.to_dict())
        while True:
            wait([conn, process.sentinel])
            try:
                if not conn.poll():  # only the sentinel: the process is gone and said nothing more
                    raise EOFError
                kind, payload = conn.recv()
            except (EOFError, OSError):
                process.join(5)
                code = process.exitcode
                if self.process is process:
                    self.process = None
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise JobFailed(f"worker process died ({how})") from None
            if kind == "done":
                return payload
            if kind == "failed":
                raise JobFailed(payload)
            on_event(kind, payload)

    def stop(self) -> None:
        """End the worker: politely between jobs, by SIGTERM (then SIGKILL) in the middle of one."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        process.join(2)
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


@dataclass
class Pool:
    """An executor's slots, each running one job at a time, and how to release them when the batch is over."""
    slots: list
    close: Callable[[], None]


def local_pool(model: str, device: str = "auto", workers: Optional[int] = None, threads: Optional[int] = None) -> Pool:
    """A pool sized to the machine: one worker per GPU where there are GPUs, else one per THREADS_PER_WORKER cores."""
    gpus = _cuda_devices() if device in ("auto", "cuda") else 0
    if gpus:
        workers = workers or gpus
        slots = [ProcessSlot(i, model, f"cuda:{i % gpus}", threads) for i in range(workers)]
    else:
        threads = threads or THREADS_PER_WORKER
        workers = workers or max(1, (os.cpu_count() or 1) // threads)
        slots = [ProcessSlot(i, model, "cpu" if device == "auto" else device, threads) for i in range(workers)]
    return Pool(slots, lambda: [slot.stop() for slot in slots])


def _cuda_devices() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---- the driver ------------------------------------------------------------------------------------

@dataclass
class BatchResult:
    jobs: List[dict]  # one summary per job: input, outputs, outcome, frames, frames/s, wall time, worker...
    seconds: float
    backend: str  # the executor: "local" or "ray"

    @property
    def succeeded(self) -> bool:
        return all(job["outcome"] in ("done", "skipped") for job in self.jobs)

    @property
    def counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for job in self.jobs:
            counts[job["outcome"]] = counts.get(job["outcome"], 0) + 1
        return counts


class Driver:
    """Hands jobs to slots, one thread per slot; records every state change; retries failed attempts."""

    def __init__(self, jobs: List[Job], slots: list, ledger: Ledger, retries: int, executor: str,
                 progress: bool = True):
        self.ledger, self.slots, self.retries, self.executor = ledger, slots, retries, executor
        self.pending = deque(jobs)
        self.attempts: Dict[str, int] = {}
        self.in_flight = 0
        self.stopping = False
        self.error: Optional[BaseException] = None  # a driver bug in a slot thread stops the batch
        self.results: Dict[str, dict] = {}
        self.cond = threading.Condition()  # guards the queue and the counters; the bar too (slot threads share it)
        total = sum(_frame_count(job) or 0 for job in jobs)
        self.bar = tqdm(total=total or None, unit="frame", desc=f"rvm batch ({executor})", disable=not progress)
        self.done = self.failed = 0
        self.total_jobs = len(jobs)

    def run(self) -> None:
        threads = [threading.Thread(target=self._slot_loop, args=(slot,), name=f"rvm-batch-slot-{i}", daemon=True)
                   for i, slot in enumerate(self.slots)]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(0.2)
        except KeyboardInterrupt:
            with self.cond:
                self.stopping = True
                self.cond.notify_all()
            for slot in self.slots:
                slot.stop()  # the running attempt fails; _slot_loop records it interrupted and cleans up
            for thread in threads:
                thread.join()
            raise
        finally:
            self.bar.close()
            for slot in self.slots:
                slot.stop()
        if self.error is not None:
            raise self.error

    def _next(self) -> Optional[Job]:
        with self.cond:
            while not self.pending and self.in_flight and not self.stopping:
                self.cond.wait()  # a job in flight may fail and come back
            if self.stopping or not self.pending:
                return None
            self.in_flight += 1
            return self.pending.popleft()

    def _slot_loop(self, slot) -> None:
        while (job := self._next()) is not None:
            try:
                self._attempt(slot, job)
            except BaseException as error:
                with self.cond:
                    self.error, self.stopping = self.error or error, True
                for other in self.slots:
                    other.stop()
            finally:
                with self.cond:
                    self.in_flight -= 1
                    self.cond.notify_all()

    def _attempt(self, slot, job: Job) -> None:
        attempt = self.attempts[job.id] = self.attempts.get(job.id, 0) + 1
        remove_partials(job)
        counted, last_record = 0, 0.0
        worker: Dict[str, Any] = {}

        def on_event(kind: str, payload) -> None:
            nonlocal counted, last_record
            if kind == "started":
                worker.update(payload)
                self.ledger.record(job, "running", attempt=attempt, frames=0, **payload)
            elif kind == "frames":
                self._advance(payload - counted)
                counted = payload
                if time.monotonic() - last_record >= PROGRESS_EVERY_S:
                    last_record = time.monotonic()
                    self.ledger.record(job, "running", attempt=attempt, frames=payload, **worker)

        dispatched = time.perf_counter()
        try:
            result = slot.run(job, on_event)
            # what the executor adds to a job: sending it, events, the result's way back
            result["overhead_s"] = round(time.perf_counter() - dispatched - result["seconds"], 3)
        except JobFailed as error:
            self._advance(-counted)  # those frames will be done again (or never)
            if self.stopping:
                remove_partials(job)
                self.ledger.record(job, "interrupted", attempt=attempt, **worker)
                self.results[job.id] = _summary(job, "interrupted", attempt, self.executor, worker)
                return
            again = attempt <= self.retries
            self.ledger.record(job, "failed", attempt=attempt, reason=str(error), final=not again, **worker)
            log.warning("%s: attempt %d failed: %s%s", job.name, attempt, error, "; retrying" if again else "")
            if again:
                with self.cond:
                    self.pending.append(job)
                return
            with self.cond:
                self.failed += 1
            self.results[job.id] = _summary(job, "failed", attempt, self.executor, worker, reason=str(error))
        else:
            self._advance(result["frames"] - counted)
            self.ledger.record(job, "done", attempt=attempt, **result)
            with self.cond:
                self.done += 1
            self.results[job.id] = _summary(job, "done", attempt, self.executor, worker, **result)
        with self.cond:
            self.bar.set_postfix_str(f"jobs {self.done}/{self.total_jobs} done, {self.failed} failed")

    def _advance(self, frames: int) -> None:
        with self.cond:
            self.bar.update(frames)


def _summary(job: Job, outcome: str, attempts: int, executor: str, started: dict, **fields) -> dict:
    fields.setdefault("worker", started.get("worker"))
    return {"job": job.id, "input": job.input, "outputs": job.outputs, "outcome": outcome, "attempts": attempts,
            "executor": executor, **fields}


def _previous(job: Job, ledger: Ledger, executor: str) -> dict:
    """A job done by an earlier run: skipped now, with what that run recorded."""
    done = {k: v for k, v in ledger.latest[job.id].items() if k not in ("job", "input", "state", "time", "attempt")}
    return _summary(job, "skipped", 0, executor, {}, **done)


def _frame_count(job: Job) -> Optional[int]:
    """The frames a job will convert, from the container header (no decoding); None when unknown."""
    path = Path(job.input)
    try:
        if path.is_dir():
            return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        import av
        with av.open(str(path)) as container:
            return container.streams.video[0].frames or None
    except Exception:  # an unreadable input fails as its job; here it only has no count
        return None


# ---- the batch -----------------------------------------------------------------------------------

def check_output_dir(output_dir: Path) -> None:
    """Writable, or creatable: checked before anything is written."""
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise BatchError(f"output folder {output_dir}: {existing} is a file: pass a folder")
    try:  # a real file, not os.access: root passes every permission check, yet not a read-only filesystem's
        descriptor, probe = tempfile.mkstemp(prefix=".rvm-batch-probe-", dir=existing)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise BatchError(f"output folder {existing} is not writable ({error.strerror}): pass a folder you can "
                         f"write to") from None


def resolve_model(model: Optional[str]) -> str:
    """An existing artifact path (absolute), or a known checkpoint name fetched once here, not in every worker."""
    from .checkpoints import fetch
    from .runtimes import runtime_class
    model = model or "rvm_mobilenetv3"
    if Path(model).exists():
        runtime_class(model)  # an artifact no backend runs, or whose extra is missing, fails now, not in every worker
        return str(Path(model).absolute())
    if Path(model).suffix or os.sep in model:
        raise BatchError(f"model {model} does not exist: pass an artifact path or a checkpoint name")
    return str(fetch(model)[0])


RAY_POOL = "rvm.batch_ray:ray_pool"


def batch_convert(inputs: Sequence[str] = (), output_dir=".", manifest=None, outputs: Sequence[str] = ("composition",),
                  output_type: str = "video", video_format: str = "mp4", rgba_format: str = "mov",
                  model: Optional[str] = None, device: str = "auto", overwrite: bool = False,
                  retries: int = DEFAULT_RETRIES, workers: Optional[int] = None, threads: Optional[int] = None,
                  ray_address: Optional[str] = None, use_ray: bool = False, segment_frames: Optional[int] = None,
                  progress: bool = True, **options) -> BatchResult:
    """Convert many inputs with one model, on local worker processes or (`use_ray`/`ray_address`) a Ray cluster.

    `inputs`: files, globs, folders; `manifest`: CSV/JSONL rows of input, outputs by kind and `convert_video`
    options. Outputs go to `output_dir` as `<stem>.<kind>.<video_format>` (a folder for png_sequence). `options`
    are `convert_video` options for every job (background, downsample_ratio, input_resize, output_video_mbps,
    seq_chunk). Re-running the same call skips the jobs the ledger in `output_dir` records done.
    """
    from .batch_segments import DEFAULT_SEGMENT_FRAMES
    started = time.perf_counter()
    unknown = sorted(set(options) - set(JOB_OPTIONS))
    if unknown:
        raise BatchError(f"unknown option(s) {', '.join(unknown)}: batch jobs take {', '.join(JOB_OPTIONS)}")
    if retries < 0:
        raise BatchError(f"retries must be >= 0, got {retries}")
    output_dir = Path(output_dir).absolute()
    check_output_dir(output_dir)
    segment_frames = DEFAULT_SEGMENT_FRAMES if segment_frames is None else segment_frames
    jobs = plan_jobs(inputs, output_dir, manifest, outputs, output_type, video_format, rgba_format, options,
                     resolve_model(model), segment_frames)
    ledger = Ledger(output_dir / STATE_FOLDER / LEDGER_NAME)
    todo = [job for job in jobs if ledger.state(job) != "done"]
    if not overwrite:
        for job in todo:
            if ledger.state(job) is None:  # outputs of a job this ledger started are its own to replace
                taken = [p for p in job.outputs.values() if Path(p).exists()]
                if taken:
                    raise BatchError(f"output {taken[0]} already exists: pass --overwrite or choose another "
                                     f"output folder")
    executor = "ray" if use_ray or ray_address else "local"
    if not todo:
        pool = Pool([], lambda: None)
    elif executor == "ray":
        # by name, as formats name their code: the Ray executor builds on this module, which must not import it
        module, function = RAY_POOL.split(":")
        pool = getattr(importlib.import_module(module), function)(jobs[0].model, device, ray_address, threads)
    else:
        pool = local_pool(jobs[0].model, device, workers, threads)
    for job in todo:  # manifests may name outputs in subfolders
        for path in job.outputs.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    driver = Driver(todo, pool.slots, ledger, retries, executor, progress)
    try:
        driver.run()
    finally:
        ledger.close()
        pool.close()
    summaries = [driver.results.get(job.id) or _previous(job, ledger, executor) for job in jobs]
    result = BatchResult(summaries, time.perf_counter() - started, executor)
    _write_summary(output_dir / SUMMARY_NAME, result)
    return result


def _write_summary(path: Path, result: BatchResult) -> None:
    frames = sum(job.get("frames", 0) for job in result.jobs if job["outcome"] == "done")
    summary = {"executor": result.backend, "seconds": round(result.seconds, 3), "counts": result.counts,
               "frames": frames, "frames_per_second": round(frames / result.seconds, 2) if result.seconds else 0.0,
               "jobs": result.jobs}
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, path)

"""`rvm batch` / `batch_convert`: many conversions, on this machine's worker processes or on a Ray cluster.

One job model for every executor: a `Job` is the batch's `ConvertRequest` for one input, its outputs named. A
`Worker` loads the model once and runs job after job with `convert_video` (the one matting path). The driver
hands jobs to executor slots (a worker process here, a Ray actor there: see `rvm.batch.workers` and
`rvm.batch.ray_executor`; the job model and ledger are `rvm.batch.jobs`), and alone writes
the ledger, an append-only JSON-lines file in the output folder: a job is `running`, then `done` or `failed`
(with a one-line reason). Re-running the same command skips `done` jobs and redoes the rest; a failed attempt is
retried a bounded number of times, at the back of the queue, while the other jobs go on.

Nothing half-written survives: `convert_video` writes under temporary names and renames when complete; a worker
killed mid-job leaves its temporaries behind, and the driver removes them before the job runs again (or when the
batch is interrupted). Long clips run as segments of `segment_frames` frames whose recurrent state is carried
across each boundary (`rvm.batch.segments`), so a crash near the end costs one segment, not the clip.
"""
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from tqdm import tqdm

from rvm import tuning
from rvm.batch.jobs import (
    BatchError,
    BatchRequest,
    Job,
    JobFailed,
    Ledger,
    ledger_path,
    plan_jobs,
    remove_partials,
)
from rvm.batch.workers import PROGRESS_EVERY_S, Pool, local_pool
from rvm.formats import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

SUMMARY_NAME = "rvm-batch-summary.json"


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
    """An existing artifact path (absolute), or a known checkpoint name fetched once here, not in every worker;
    `auto` models are kept as they are (`resolve_auto` picks the artifact once the inputs' size is known)."""
    from rvm.checkpoints import DEFAULT_CHECKPOINT, fetch
    from rvm.runtimes import runtime_class
    model = model or DEFAULT_CHECKPOINT
    if tuning.parse_auto(model) is not None:
        return model
    if Path(model).exists():
        runtime_class(model)  # an artifact no backend runs, or whose extra is missing, fails now, not in every worker
        return str(Path(model).absolute())
    if Path(model).suffix or os.sep in model:
        raise BatchError(f"model {model} does not exist: pass an artifact path or a checkpoint name")
    return str(fetch(model)[0])


def resolve_auto(jobs: List[Job]) -> List[Job]:
    """With `--model auto[:exact|:fast]`, the jobs run the artifact this machine's tuning record chose for their
    input size (tuned here, once, when there is none: `tuned_model`). One batch runs one model, so its inputs share
    one size and ratio."""
    from rvm.measure.tune import tuned_model
    from rvm.media.video import open_source
    if not jobs or tuning.parse_auto(jobs[0].model) is None:
        return jobs
    ratios = {job.request.downsample_ratio for job in jobs}
    if len(ratios) > 1:
        raise BatchError(f"--model {jobs[0].model} picks one artifact for one downsample ratio, but the manifest "
                         f"asks for {len(ratios)}: batch each ratio apart")

    def one_size():
        sizes = {}
        for job in jobs:
            with open_source(job.input, job.request.input_resize) as source:
                sizes.setdefault(tuple(source.size), job.name)
        if len(sizes) > 1:
            listed = ", ".join(f"{name} {w}x{h}" for (w, h), name in sizes.items())
            raise BatchError(f"--model {jobs[0].model} picks one artifact for one input size, but the inputs have "
                             f"{len(sizes)} sizes ({listed}): batch each size apart, or pass --input-resize W H")
        return next(iter(sizes))
    model = tuned_model(jobs[0].model, one_size, ratios.pop(), jobs[0].request.device)
    return [replace(job, request=replace(job.request, model=model)) for job in jobs]


def batch_convert(request: BatchRequest) -> BatchResult:
    """Convert many inputs with one model, on local worker processes or (`use_ray`/`ray_address`) a Ray cluster
    (see `BatchRequest`). Re-running the same request skips the jobs the ledger in `output_dir` records done."""
    from rvm.batch.segments import DEFAULT_SEGMENT_FRAMES
    started = time.perf_counter()
    if request.retries < 0:
        raise BatchError(f"retries must be >= 0, got {request.retries}")
    output_dir = Path(request.output_dir).absolute()
    check_output_dir(output_dir)
    segment_frames = DEFAULT_SEGMENT_FRAMES if request.segment_frames is None else request.segment_frames
    convert = replace(request.convert, model=resolve_model(request.convert.model))
    jobs = resolve_auto(plan_jobs(replace(request, output_dir=output_dir, convert=convert,
                                          segment_frames=segment_frames)))
    ledger = Ledger(ledger_path(output_dir))
    todo = [job for job in jobs if ledger.state(job) != "done"]
    if not convert.overwrite:
        for job in todo:
            if ledger.state(job) is None:  # outputs of a job this ledger started are its own to replace
                taken = [p for p in job.outputs.values() if Path(p).exists()]
                if taken:
                    raise BatchError(f"output {taken[0]} already exists: pass --overwrite or choose another "
                                     f"output folder")
    executor = "ray" if request.use_ray or request.ray_address else "local"
    device, threads = convert.device, request.threads
    if not todo:
        pool = Pool([], lambda: None)
    elif executor == "ray":
        from rvm.batch.ray_executor import ray_pool  # here: Ray is an optional extra
        pool = ray_pool(jobs[0].model, device, request.ray_address, threads)
    else:
        pool = local_pool(jobs[0].model, device, request.workers, threads)
    for job in todo:  # manifests may name outputs in subfolders
        for path in job.outputs.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    driver = Driver(todo, pool.slots, ledger, request.retries, executor, convert.progress)
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

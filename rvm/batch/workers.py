"""The local executor of `rvm batch`: a `Worker` loads the model once and converts job after job with
`convert_video`; a `ProcessSlot` runs one in a child process that dies with its parent, so a crash or a kill costs
that job's attempt, never the batch."""
import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Optional

from rvm.batch.jobs import Job, JobFailed
from rvm.errors import brief

# 2 workers x 1 thread converted 1.1-1.3x the frames/s of 1 worker x 2 threads once running on this 2-core machine
# (docs/batch.md, "Measured here"): each conversion is a pipeline whose decode and encode threads leave a lone
# model idle part of the time, and a second worker fills the gaps
THREADS_PER_WORKER = 1
PROGRESS_EVERY_S = 0.5  # how often a worker reports frames, and the ledger records them


# ---- the worker: one model, job after job ------------------------------------------------------------

class Worker:
    """Loads the model once; `run` converts one job with `convert_video` and reports its frames as they complete."""

    def __init__(self, model: str, device: str = "auto", threads: Optional[int] = None):
        import torch

        from rvm.runtimes import load
        if threads:  # the conversion's own torch work (compositing), whatever the backend
            torch.set_num_threads(threads)
        # every runtime takes `threads` and maps it to its backend's setting; a corrupt artifact: ArtifactError
        self.runtime = load(model, device=device, threads=threads)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job: Job, emit: Callable[[str, Any], None]) -> dict:
        from rvm.batch.segments import convert_job
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
            raise JobFailed(_reason(error)) from None
        seconds = time.perf_counter() - started
        emit("frames", frames)
        return {"frames": summary["frames"], "seconds": round(seconds, 3),
                "frames_per_second": round(summary["frames"] / seconds, 2) if seconds else 0.0,
                "segments": summary["segments"], "reused_segments": summary["reused_segments"],
                "join_seconds": summary["join_seconds"],
                "worker": self.name, "backend": self.runtime.backend, "device": self.runtime.info.device}

    def close(self) -> None:
        self.runtime.close()


def _reason(error: BaseException) -> str:
    """A failed job's or worker's reason, on one line and whole; ValueError and OSError messages (ours, a file's)
    say what failed without their type."""
    return brief(error, limit=None, typed=not isinstance(error, (ValueError, OSError)))


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
        worker, load_error = None, f"cannot load model {model}: {_reason(error)}"
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

"""The Ray executor of `rvm batch --ray [ADDRESS]`: the same jobs and `Worker` as the local pool, in Ray actors.

One long-lived actor per slot loads the model once and converts job after job; a slot asks for one GPU where
the cluster has GPUs, else `threads` CPUs. Frames never travel through Ray: inputs and outputs are paths every
node sees (a shared filesystem), and only small job descriptions and progress events cross the object store,
which is therefore kept small. An actor that dies fails its attempt (the driver retries it) and is replaced.
"""
import logging
import os
import socket
import threading
from typing import Any, Callable, List, Optional
from urllib.parse import urlparse

from rvm.batch.jobs import BatchError, Job, JobFailed
from rvm.batch.workers import THREADS_PER_WORKER, Pool, Worker
from rvm.errors import MissingDependency

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 80 << 20  # job descriptions and events only; Ray's minimum is 75 MiB
POLL_S = 0.25  # how often the driver collects an actor's progress events
CONNECT_TIMEOUT_S = 5


class RayWorker:
    """The actor body: a `Worker` plus an event list the driver polls (the actor runs its methods on two threads,
    so `events` answers while `run` converts)."""

    def __init__(self, model: str, device: str, threads: Optional[int]):
        self.worker = Worker(model, device, threads)
        self._events: List[tuple] = []
        self._lock = threading.Lock()

    def run(self, job: dict) -> tuple:
        def emit(kind: str, payload: Any) -> None:
            with self._lock:
                self._events.append((kind, payload))
        try:
            return "done", self.worker.run(Job.from_dict(job), emit)
        except JobFailed as error:
            return "failed", str(error)

    def events(self) -> List[tuple]:
        with self._lock:
            events, self._events = self._events, []
        return events


def _check_reachable(address: str) -> None:
    """An unreachable address fails in seconds with one line, not after Ray's own minute of retries."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        raise BatchError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise BatchError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}): start it "
                         f"(ray start --head) or pass its address") from None


def connect(address: Optional[str]) -> bool:
    """Join the cluster at `address`, or start a local Ray on this machine's cores; returns whether this call
    started the connection (and so should shut it down). An already initialised Ray is used as it is."""
    # Ray >= 2.48 warns at every actor that it will stop overriding CUDA_VISIBLE_DEVICES for num_gpus=0; take the
    # new behaviour now (a CPU slot never uses a GPU anyway)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import ray
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise BatchError(f"cannot join the Ray cluster at {address}: {' '.join(str(error).split())}") from None
    else:
        # a local Ray has no metrics agent to talk to: without this each worker logs that it could not reach one
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                 _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
    return True


class RaySlot:
    """One actor, created on first use and again after it died."""

    def __init__(self, index: int, model: str, device: str, threads: int, gpus: float):
        self.index, self.model, self.device, self.threads, self.gpus = index, model, device, threads, gpus
        self.actor = None

    def _start(self) -> None:
        import ray
        actor_class = ray.remote(RayWorker)
        self.actor = actor_class.options(num_cpus=self.threads, num_gpus=self.gpus, max_concurrency=2,
                                         max_restarts=0, name=None).remote(self.model, self.device, self.threads)

    def run(self, job: Job, on_event: Callable[[str, Any], None]) -> dict:
        import ray
        from ray.exceptions import RayError
        if self.actor is None:
            self._start()
        try:
            pending = self.actor.run.remote(job.to_dict())
            while True:
                finished, _ = ray.wait([pending], timeout=POLL_S)
                for kind, payload in ray.get(self.actor.events.remote()):
                    on_event(kind, payload)
                if finished:
                    outcome, payload = ray.get(pending)
                    break
        except RayError as error:
            self.actor = None
            reason = " ".join(str(error).split())[:300]
            raise JobFailed(f"Ray worker died ({type(error).__name__}: {reason})") from None
        if outcome == "failed":
            raise JobFailed(payload)
        return payload

    def stop(self) -> None:
        if self.actor is not None:
            import ray
            ray.kill(self.actor)
            self.actor = None


def ray_pool(model: str, device: str = "auto", address: Optional[str] = None, threads: Optional[int] = None) -> Pool:
    """One slot per GPU of the cluster, or per `threads` CPUs where it has none. Closing the pool stops the actors
    and, where `connect` started Ray, Ray itself."""
    try:
        import ray
    except ImportError:
        raise MissingDependency("rvm batch --ray", "ray", "ray") from None
    started = connect(address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device in ("auto", "cuda") else 0
    threads = threads or THREADS_PER_WORKER
    if gpus:
        slots = [RaySlot(i, model, "cuda", threads, 1) for i in range(gpus)]
    else:
        cpus = int(resources.get("CPU", 1))
        slots = [RaySlot(i, model, "cpu" if device == "auto" else device, threads, 0)
                 for i in range(max(1, cpus // threads))]
    log.info("Ray: %d worker slot(s) over %s", len(slots), {k: v for k, v in resources.items() if "node" not in k})

    def close() -> None:
        for slot in slots:
            slot.stop()
        if started:
            ray.shutdown()
    return Pool(slots, close)

"""`LiveSession`: capture, inference and each sink on their own threads, joined by one-slot queues.

A `NewestSlot` holds one item; putting a new one replaces the old, which is counted as dropped. So when the model
is slower than the source, inference always takes the newest frame and latency stays bounded: the backlog is
never more than one frame per stage. The recurrent state is carried over the frames inference takes (that is
what the network sees as the video), reset on demand and whenever the source restarts (a loop, a reopen) or
changes size.
"""
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rvm.errors import RVMError, UsageError, VideoError
from rvm.live.sinks import LiveSink, Matted
from rvm.live.sources import LiveSource, open_live_source
from rvm.live.stats import LiveStats
from rvm.media.pipeline import Chunk, check_runtime_fits, to_nchw

log = logging.getLogger(__name__)
END = object()  # the input ended: no more items
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)  # waits between reopen attempts; the last repeats
# how long `stop()` waits for the threads: each finishes its current step (a frame read, a model step, a frame
# written), so only a stuck sink (a pipe nobody reads) or device takes longer, and is then left unclosed
STOP_TIMEOUT_S = 10.0


class SourceLost(RVMError):
    """The camera or stream did not come back within the reconnect time."""


class SinkStuck(RVMError):
    """A sink was still writing a frame long after the session stopped (a pipe nobody reads, a hung device)."""


@dataclass
class Captured:
    image: np.ndarray  # uint8 RGB HWC
    captured: float  # time.perf_counter() when the source delivered it
    opening: int  # which opening of the source it came from: a new one resets the recurrent state


class NewestSlot:
    """A one-slot queue that keeps the newest item. `put` returns True when it replaced an unread item."""

    def __init__(self):
        self._condition = threading.Condition()
        self._item = None
        self._full = False
        self._ended = False

    def put(self, item) -> bool:
        with self._condition:
            if self._ended:
                return False
            replaced, self._item, self._full = self._full, item, True
            if item is END:
                self._ended = True
            self._condition.notify()
            return replaced

    def get(self, stopped: threading.Event, timeout: float = 0.1):
        """The newest item; END once the input ended or `stopped` is set."""
        with self._condition:
            while not self._full:
                if stopped.is_set():
                    return END
                self._condition.wait(timeout)
            item, self._item, self._full = self._item, None, False
            return item


class LiveSession:
    """Matte `source` with `runtime` into every sink of `sinks`, live.

    `start()` checks every sink (a port in use, a missing virtual camera: one error before capture starts), opens
    the source, opens the sinks at its size and starts the threads; `stop()` (or leaving the `with` block) stops
    them and closes every sink, so a recording is finalised. `reset()` restarts the recurrent state, `set_ratio()`
    changes the downsample ratio while running, `stats()` reads the counters. A camera or stream that drops is
    opened again with backoff for up to `reconnect_s` seconds; then the session ends with `SourceLost`.
    """

    def __init__(self, source: LiveSource, runtime, sinks: Sequence[LiveSink], downsample_ratio="auto",
                 reconnect_s: float = 10.0):
        if not sinks:
            raise UsageError("no sink: pass at least one of --virtual-camera, --preview, --page, --output-*, "
                             "--raw-stdout")
        self.source, self.runtime, self.sinks = source, runtime, list(sinks)
        self.downsample_ratio = downsample_ratio
        self.reconnect_s = reconnect_s
        self.live_stats = LiveStats([sink.name for sink in self.sinks])
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._reset_requested = threading.Event()
        self._captured = NewestSlot()
        self._sink_slots = [NewestSlot() for _ in self.sinks]
        self._threads: List[threading.Thread] = []
        self._sink_threads: List[threading.Thread] = []
        self.stop_timeout_s = STOP_TIMEOUT_S
        self._running_sinks = len(self.sinks)
        self.error: Optional[BaseException] = None
        self._started = False
        self._inference_threads = torch.get_num_threads()

    # ---- control -----------------------------------------------------------------------------------
    def start(self) -> "LiveSession":
        for sink in self.sinks:
            sink.prepare()
        opened: List[LiveSink] = []
        try:
            self.source.open()
            self._describe_source()
            width, height = self.source.size
            check_runtime_fits(self.runtime, self.source.size, self.downsample_ratio, "--resolution {}x{}")
            self.live_stats.ratio = self.runtime.resolve_ratio(height, width, self.downsample_ratio)
            for sink in self.sinks:
                sink.open(self.source.size, self.source.fps, self)
                opened.append(sink)
        except BaseException:
            for sink in opened:
                sink.abort()
            for sink in self.sinks:
                sink.release()
            self.source.close()
            raise
        self.runtime.reset()
        self._started = True
        self._capture_thread = self._spawn("rvm-live-capture", self._capture)
        self._spawn("rvm-live-infer", self._infer, self._inference_threads)
        self._sink_threads = [self._spawn(f"rvm-live-sink-{sink.name}", lambda i=index: self._deliver(i))
                              for index, sink in enumerate(self.sinks)]
        return self

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once the session ended by itself (the input ended, a fault, or `end()` was asked for)."""
        return self._finished.wait(timeout)

    def end(self) -> None:
        """Ask for the end from any thread (a preview window closed, `q`): `wait()` returns; `stop()` still stops."""
        self._finished.set()

    def stop(self) -> None:
        """Stop every thread, close every sink (finalising recordings) and the source; re-raises a fault.

        Bounded: threads still running `stop_timeout_s` after the stop are left behind (daemons), and what they
        were using is not closed under them (that could crash the encoder), which a `SinkStuck` error names."""
        if not self._started:
            return
        self._started = False
        self._stopped.set()
        deadline = time.perf_counter() + self.stop_timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
        if not self._capture_thread.is_alive():
            self.source.close()
        failed, stuck = None, []
        for sink, thread in zip(self.sinks, self._sink_threads):
            if thread.is_alive():
                stuck.append(sink.name)
                continue
            try:
                sink.close()
            except BaseException as error:  # close the others still; report the first
                failed = failed or error
        if self.error is not None:
            raise self.error
        if failed is not None:
            raise failed
        if stuck:
            raise SinkStuck(f"{', '.join(stuck)} did not finish writing within {self.stop_timeout_s:g} s of the "
                            f"stop, so it was left unclosed (its output is incomplete); every other sink was closed")

    def reset(self) -> None:
        """Start the recurrent state again from zeros at the next frame."""
        self._reset_requested.set()

    def set_ratio(self, downsample_ratio) -> None:
        width, height = self.source.size
        ratio = self.runtime.resolve_ratio(height, width, downsample_ratio)  # raises on a bad value, before use
        self.downsample_ratio = downsample_ratio
        self.live_stats.ratio = ratio

    def stats(self) -> dict:
        return self.live_stats.snapshot()

    def __enter__(self) -> "LiveSession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- threads -----------------------------------------------------------------------------------
    def _spawn(self, name: str, body: Callable[[], None], torch_threads: int = 1) -> threading.Thread:
        def guarded():
            # torch's intra-op threads are set per thread: capture and sinks do small tensor work, which two
            # threads made 20x dearer on a busy 2-core machine (50 ms against 2.3 ms of CPU for a 640x360 RGBA
            # frame), CPU taken from the model; inference keeps the caller's setting
            torch.set_num_threads(torch_threads)
            try:
                body()
            except BaseException as error:
                if self.error is None:
                    self.error = error
                self._stopped.set()
                self._finished.set()
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _describe_source(self) -> None:
        described = self.source.describe()
        self.live_stats.source = described
        asked = ", ".join(f"{key} {described[key]}" for key in ("requested_size", "requested_fps") if key in described)
        log.info("source %s: %s at %g fps%s", self.source.name, described["size"], described["fps"],
                 f" (asked for {asked})" if asked else "")

    def _capture(self) -> None:
        opening = 0
        outage = None  # (since, attempts) from a failure until the source delivers a frame again
        while not self._stopped.is_set():
            why = "it ended"
            try:
                for image in self.source.frames():
                    if self._stopped.is_set():
                        break
                    if outage is not None:  # back only once it delivers: an open that fails on its first read is not
                        log.info("%s is back after %d attempt(s)", self.source.name, outage[1])
                        outage = None
                    captured = Captured(image, time.perf_counter(), opening)
                    with self.live_stats.lock:
                        self.live_stats.captured += 1
                    if self._captured.put(captured):
                        with self.live_stats.lock:
                            self.live_stats.dropped += 1
                else:
                    if not (self.source.loops or self.source.live):
                        break  # the end of the input
                    if self.source.loops:
                        self.source.close()
                        self.source.open()
                        opening += 1
                        continue
                    log.warning("%s ended: opening it again", self.source.name)
            except VideoError as error:
                if self._stopped.is_set():
                    break
                why = str(error)
                log.warning("%s: opening it again", error)
            if self._stopped.is_set():
                break
            outage = self._reopen(outage or (time.perf_counter(), 0), why)
            opening += 1
        self._captured.put(END)

    def _reopen(self, outage: Tuple[float, int], why: str) -> Tuple[float, int]:
        """Open the source again: at once after frames were flowing, then with growing waits while it delivers none
        (an open that fails on its first read counts as failed); past `reconnect_s` since the outage began, the
        session ends with the last reason. Returns the outage, its attempts counted."""
        self.source.close()
        since, attempts = outage
        while True:
            if attempts:
                wait = BACKOFF_S[min(attempts - 1, len(BACKOFF_S) - 1)]
                if time.perf_counter() + wait > since + self.reconnect_s or self._stopped.is_set():
                    raise SourceLost(f"{self.source.name} was lost and did not come back within {self.reconnect_s:g} "
                                     f"s ({attempts} attempts; last: {why}): check the camera or stream and start "
                                     f"again")
                self._stopped.wait(wait)
            attempts += 1
            try:
                self.source.open()
                break
            except VideoError as error:
                why = str(error)
        with self.live_stats.lock:
            self.live_stats.reopens += 1
        self._describe_source()
        return since, attempts

    def _infer(self) -> None:
        opening, index = 0, 0
        while (item := self._captured.get(self._stopped)) is not END:
            if item.opening != opening or self._reset_requested.is_set():
                self._reset_requested.clear()
                opening = item.opening
                self.runtime.reset()
                with self.live_stats.lock:
                    self.live_stats.resets += 1
            src = to_nchw([item.image])
            started = time.perf_counter()
            fgr, pha = self.runtime.run_nchw(src, self.downsample_ratio)
            done = time.perf_counter()
            matted = Matted(Chunk(src, None, fgr, pha), item.captured, index)
            index += 1
            with self.live_stats.lock:
                self.live_stats.matted += 1
                self.live_stats.model.append(done - started)
                self.live_stats.matted_times.append(done)
            for slot, stats in zip(self._sink_slots, self.live_stats.sinks):
                if slot.put(matted):
                    with self.live_stats.lock:
                        stats.dropped += 1
        for slot in self._sink_slots:
            slot.put(END)

    def _deliver(self, index: int) -> None:
        sink, slot, stats = self.sinks[index], self._sink_slots[index], self.live_stats.sinks[index]
        try:
            while (matted := slot.get(self._stopped)) is not END:
                sink.write(matted)
                written = time.perf_counter()
                with self.live_stats.lock:
                    stats.delivered += 1
                    stats.latency.append(written - matted.captured)
                    stats.times.append(written)
        finally:
            with self.live_stats.lock:
                self._running_sinks -= 1
                if self._running_sinks == 0:
                    self._finished.set()


def live(source, runtime, sinks: Sequence[LiveSink], downsample_ratio="auto", reconnect_s: float = 10.0,
         size=None, fps=None, loop: bool = False) -> LiveSession:
    """A started `LiveSession`: `source` a camera index, device, URL or video file (or a `LiveSource`)."""
    if not isinstance(source, LiveSource):
        source = open_live_source(source, size, fps, loop)
    return LiveSession(source, runtime, sinks, downsample_ratio, reconnect_s).start()

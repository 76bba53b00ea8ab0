"""Counters and timings of a live session: frames captured, matted, dropped; fps; model ms; glass-to-glass latency.

Timings are kept over a recent window (bounded deques), so a session running for hours holds flat memory and its
percentiles describe now, not the average since it started.
"""
import threading
import time
from collections import deque
from typing import Dict, List, Optional

import numpy as np

WINDOW = 600  # samples per timing window: 20 s at 30 fps


def _rate(times: deque) -> float:
    if len(times) < 2 or times[-1] == times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def _percentile(values, q: float) -> Optional[float]:
    return round(float(np.percentile(np.fromiter(values, float), q)) * 1000, 1) if values else None


class SinkStats:
    def __init__(self, name: str):
        self.name = name
        self.delivered = 0
        self.dropped = 0  # matted frames replaced in this sink's slot before it could write them
        self.latency = deque(maxlen=WINDOW)  # seconds from capture to the end of this sink's write
        self.times = deque(maxlen=60)

    def snapshot(self) -> Dict:
        return {"delivered": self.delivered, "dropped": self.dropped, "fps": round(_rate(self.times), 2),
                "latency_ms_p50": _percentile(self.latency, 50), "latency_ms_p95": _percentile(self.latency, 95)}


class LiveStats:
    """Updated by the session's threads under one lock; `snapshot()` is what `--stats FILE`, the status line and the
    page show."""

    def __init__(self, sink_names: List[str]):
        self.lock = threading.Lock()
        self.started = time.perf_counter()
        self.captured = 0
        self.matted = 0
        self.dropped = 0  # captured frames replaced before inference took them
        self.resets = 0  # recurrent state resets: asked for, or the source restarted
        self.reopens = 0  # the source lost and opened again
        self.model = deque(maxlen=WINDOW)  # seconds per inference
        self.matted_times = deque(maxlen=60)
        self.sinks = [SinkStats(name) for name in sink_names]
        self.source: Dict = {}
        self.ratio: Optional[float] = None

    def snapshot(self) -> Dict:
        with self.lock:
            latency = [value for sink in self.sinks for value in sink.latency]
            return {
                "seconds": round(time.perf_counter() - self.started, 2), "source": dict(self.source),
                "captured": self.captured, "matted": self.matted, "dropped": self.dropped,
                "fps": round(_rate(self.matted_times), 2), "downsample_ratio": self.ratio,
                "model_ms_p50": _percentile(self.model, 50), "model_ms_p95": _percentile(self.model, 95),
                "latency_ms_p50": _percentile(latency, 50), "latency_ms_p95": _percentile(latency, 95),
                "resets": self.resets, "reopens": self.reopens,
                "sinks": {sink.name: sink.snapshot() for sink in self.sinks}}


def status_line(snapshot: Dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.0f}"
    return (f"{snapshot['fps']:5.1f} fps | captured {snapshot['captured']} matted {snapshot['matted']} "
            f"dropped {snapshot['dropped']} | model {ms(snapshot['model_ms_p50'])} ms | latency p50 "
            f"{ms(snapshot['latency_ms_p50'])} p95 {ms(snapshot['latency_ms_p95'])} ms")

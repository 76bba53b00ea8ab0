"""`rvm profile`: where a frame's time goes, block by block, in PyTorch eager (module hooks) beside ONNX artifacts
(ONNX Runtime's own profiler), at one resolution and ratio. A speed target is judged against it: int8 can only speed
up the blocks it quantizes, and a block that is memory-bound at full resolution bounds every backend alike.

Blocks are the network's modules. ONNX node names carry the same module path (`/backbone/features.0/...`), also in
static and int8 (QDQ) graphs, so one table covers every ONNX variant. What no block owns (downsampling the input,
the decoder's pooled copies of the image, nodes the runtime adds between blocks) is `other`.
"""
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from rvm.errors import UsageError

log = logging.getLogger(__name__)

BLOCKS = ("backbone", "aspp", "decoder.decode4", "decoder.decode3", "decoder.decode2", "decoder.decode1",
          "decoder.decode0", "project_mat", "refiner")
OTHER = "other"
WARMUP = 2  # runs left out: the first allocate buffers and pick kernels


@dataclass
class Profile:
    name: str
    frame_ms: float  # median wall time of a frame, the profiled runs alone
    block_ms: Dict[str, float] = field(default_factory=dict)  # mean per frame, BLOCKS then OTHER

    def share(self, block: str) -> float:
        return self.block_ms[block] / sum(self.block_ms.values())


def block_of_node(name: str) -> str:
    """The block an ONNX node belongs to, from the module path in its name."""
    for block in BLOCKS:
        if f"/{block.replace('.', '/')}/" in name:
            return block
    return OTHER


def timed_frames(runtime, src: np.ndarray, ratio: float, count: int) -> List[float]:
    """Seconds of each of `count` frames, the state carried."""
    seconds = []
    for _ in range(count):
        begin = time.perf_counter()
        runtime.run_nchw(src, ratio)
        seconds.append(time.perf_counter() - begin)
    return seconds


def onnx_file(path) -> Path:
    path = Path(path)
    if path.suffix != ".onnx":
        raise UsageError(f"{path}: rvm profile reads ONNX files (ONNX Runtime's profiler): export one with "
                         f"--format onnx")
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    return path


def pytorch_profile(model, src: np.ndarray, ratio: float, frames: int) -> Profile:
    """PyTorch eager fp32: each block timed between forward hooks (CPU runs synchronously, so that is its time)."""
    from rvm.runtimes.pytorch import PyTorchRuntime
    runtime = PyTorchRuntime(model, device="cpu")
    spent = {block: 0.0 for block in BLOCKS}
    started = {}

    def before(block):
        def start(module, args):
            started[block] = time.perf_counter()
        return start

    def after(block):
        def add(module, args, output):
            spent[block] += time.perf_counter() - started[block]
        return add

    modules = dict(runtime.model.named_modules())
    handles = [hook for block in BLOCKS for hook in (modules[block].register_forward_pre_hook(before(block)),
                                                   modules[block].register_forward_hook(after(block)))]
    try:
        timed_frames(runtime, src, ratio, WARMUP)
        spent.update((block, 0.0) for block in BLOCKS)
        frame_seconds = timed_frames(runtime, src, ratio, frames)
    finally:
        for handle in handles:
            handle.remove()
    block_ms = {block: 1000 * seconds / frames for block, seconds in spent.items()}
    frame_ms = 1000 * statistics.median(frame_seconds)
    block_ms[OTHER] = max(0.0, 1000 * sum(frame_seconds) / frames - sum(block_ms.values()))
    return Profile("pytorch fp32", frame_ms, block_ms)


def onnx_profile(path, src: np.ndarray, ratio: float, frames: int, graph_optimization: str = "all") -> Profile:
    """An ONNX artifact in ONNX Runtime (CPU, the session settings `Runtime.load` uses), its node times summed
    per block over the profiled runs."""
    import onnxruntime as ort

    from rvm.runtimes.onnxruntime import OnnxRuntime, session_options
    path = onnx_file(path)
    with tempfile.TemporaryDirectory(prefix="rvm-profile-") as folder:
        options = session_options(graph_optimization)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        runtime = OnnxRuntime(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                              path=str(path))
        frame_seconds = timed_frames(runtime, src, ratio, WARMUP + frames)[WARMUP:]
        events = json.loads(Path(runtime.session.end_profiling()).read_text())
    runs = sorted(event["ts"] for event in events if event.get("cat") == "Session" and event["name"] == "model_run")
    if len(runs) != WARMUP + frames:
        raise RuntimeError(f"ONNX Runtime's profile of {path.name} has {len(runs)} runs, expected {WARMUP + frames}")
    block_us = {block: 0.0 for block in (*BLOCKS, OTHER)}
    for event in events:  # node events are named "<node>_kernel_time"
        if event.get("cat") == "Node" and event["ts"] >= runs[WARMUP] and event["name"].endswith("_kernel_time"):
            block_us[block_of_node(event["name"])] += event["dur"]
    precision = runtime.info.precision + (" static" if runtime.static else "")
    return Profile(f"{path.name} ({precision})", 1000 * statistics.median(frame_seconds),
                   {block: us / 1000 / frames for block, us in block_us.items()})


def run_profiles(model, artifacts: Sequence[str], size, ratio: float, frames: int) -> List[Profile]:
    from rvm.measure.bench import sample_frame
    src = sample_frame(*size)
    profiles = [pytorch_profile(model, src, ratio, frames)]
    for path in artifacts:
        log.info("profiling %s", path)
        profiles.append(onnx_profile(path, src, ratio, frames))
    return profiles


def to_markdown(profiles: Sequence[Profile], size, ratio: float) -> str:
    header = ["block", *(p.name for p in profiles)]
    lines = [f"Per-block time at {size[0]}x{size[1]}, ratio {ratio}: ms a frame (share of the profiled time)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for block in (*BLOCKS, OTHER):
        cells = [f"{p.block_ms[block]:.1f} ({100 * p.share(block):.0f}%)" for p in profiles]
        lines.append(f"| {block} | " + " | ".join(cells) + " |")
    lines.append("| **frame (wall, median)** | " + " | ".join(f"**{p.frame_ms:.1f}**" for p in profiles) + " |")
    return "\n".join(lines)

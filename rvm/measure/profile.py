"""`rvm profile`: where a frame's time goes, block by block, in PyTorch eager (module hooks) beside ONNX artifacts
(ONNX Runtime's own profiler), at one resolution and ratio. A speed target is judged against it: int8 can only speed
up the blocks it quantizes, and a block that is memory-bound at full resolution bounds every backend alike.

Blocks are the network's modules. ONNX node names carry the same module path (`/backbone/features.0/...`), also in
static and int8 (QDQ) graphs, so one table covers every ONNX variant. What no block owns (downsampling the input,
the decoder's pooled copies of the image, nodes the runtime adds between blocks) is `other`.

How far from the hardware: each block's work is counted once on the PyTorch model (`block_work`: GFLOPs of its
convolutions and matrix products, and the bytes its operators read and write, unfused), and this machine's peak is
measured by a short GEMM and memory-copy microbenchmark (`machine_peak`). A block's ceiling is the roofline time,
the larger of its FLOPs at peak GFLOP/s and its bytes at peak bandwidth; its share of peak is that ceiling over its
measured time, per profiled backend.
"""
import json
import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from rvm.errors import UsageError

log = logging.getLogger(__name__)

REFINER = "refiner"  # also where the fused full-resolution step, outside the ONNX session, is counted
BLOCKS = ("backbone", "aspp", "decoder.decode4", "decoder.decode3", "decoder.decode2", "decoder.decode1",
          "decoder.decode0", "project_mat", REFINER)
OTHER = "other"
WARMUP = 2  # runs left out: the first allocate buffers and pick kernels


@dataclass
class Profile:
    name: str
    frame_ms: float  # median wall time of a frame, the profiled runs alone
    block_ms: Dict[str, float] = field(default_factory=dict)  # mean per frame, BLOCKS then OTHER

    def share(self, block: str) -> float:
        return self.block_ms[block] / sum(self.block_ms.values())


@dataclass
class Peak:
    """This machine's attainable peak, measured: fp32 GEMM on every thread torch uses, and memory copy."""
    gflops: float  # GFLOP/s
    gbytes: float  # GB/s, bytes read plus bytes written


@dataclass
class Work:
    gflops: float  # convolutions and matrix products (multiply and add counted apart)
    mbytes: float  # bytes every operator reads and writes, unfused (views excluded)

    def ceiling_ms(self, peak: Peak) -> float:
        """The roofline: the time this work takes at the machine's peak compute or bandwidth, whichever binds."""
        return 1000 * max(self.gflops / peak.gflops, self.mbytes / 1000 / peak.gbytes)


def machine_peak(repeats: int = 5) -> Peak:
    """Best of `repeats`: a 2048x2048 fp32 matrix product, and copying 256 MiB."""
    import torch
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    source = torch.rand(64 * 2 ** 20)
    target = torch.empty_like(source)

    def best(run) -> float:
        run()  # warm: page faults, thread start
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            run()
            times.append(time.perf_counter() - begin)
        return min(times)

    gemm = best(lambda: torch.mm(a, b))
    copy = best(lambda: target.copy_(source))
    return Peak(2 * 2048 ** 3 / gemm / 1e9, 2 * source.nbytes / copy / 1e9)


def block_work(model, size, ratio: float) -> Dict[str, Work]:
    """GFLOPs and MB moved by each block (and `other`) on one frame of `size` at `ratio`."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    class Traffic(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.block, self.bytes = OTHER, {block: 0 for block in (*BLOCKS, OTHER)}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:  # a view moves nothing
                self.bytes[self.block] += sum(t.nbytes for t in tree_flatten((args, kwargs, out))[0]
                                              if isinstance(t, torch.Tensor))
            return out

    model = model.float().cpu().eval()
    src = torch.rand(1, 3, size[1], size[0])
    traffic = Traffic()
    modules = dict(model.named_modules())

    def enter(block):
        def hook(module, args):
            traffic.block = block
        return hook

    def leave(module, args, output):
        traffic.block = OTHER

    handles = [hook for block in BLOCKS for hook in (modules[block].register_forward_pre_hook(enter(block)),
                                                   modules[block].register_forward_hook(leave))]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model(src, downsample_ratio=ratio)
        with torch.no_grad(), traffic:
            model(src, downsample_ratio=ratio)
    finally:
        for handle in handles:
            handle.remove()
    counts = {name: sum(ops.values()) for name, ops in flops.get_flop_counts().items()}
    prefix = type(model).__name__
    block_flops = {block: counts.get(f"{prefix}.{block}", 0) for block in BLOCKS}
    block_flops[OTHER] = counts.get(prefix, 0) - sum(block_flops.values())
    return {block: Work(block_flops[block] / 1e9, traffic.bytes[block] / 1e6) for block in (*BLOCKS, OTHER)}


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


def onnx_profile(path, src: np.ndarray, ratio: float, frames: int, graph_optimization: str = "all",
                 full_resolution_step: str = "auto") -> Profile:
    """An ONNX artifact in ONNX Runtime as `Runtime.load` runs it on the CPU (its session settings; the guided
    filter's full-resolution step fused where it is, unless `full_resolution_step` says otherwise, its time added
    to the refiner's), the session's node times summed per block over the profiled runs."""
    from rvm.runtimes.onnxruntime import OnnxRuntime
    path = onnx_file(path)
    with tempfile.TemporaryDirectory(prefix="rvm-profile-") as folder:
        runtime = OnnxRuntime.from_path(path, device="cpu", graph_optimization=graph_optimization,
                                        full_resolution_step=full_resolution_step,
                                        profile_file_prefix=str(Path(folder) / "ort"))
        fused = runtime.full_resolution_step
        timed_frames(runtime, src, ratio, WARMUP)
        fused_seconds = fused.seconds if fused else 0.0
        frame_seconds = timed_frames(runtime, src, ratio, frames)
        events = json.loads(Path(runtime.session.end_profiling()).read_text())
        runtime.close()
    runs = sorted(event["ts"] for event in events if event.get("cat") == "Session" and event["name"] == "model_run")
    if len(runs) != WARMUP + frames:
        raise RuntimeError(f"ONNX Runtime's profile of {path.name} has {len(runs)} runs, expected {WARMUP + frames}")
    block_us = {block: 0.0 for block in (*BLOCKS, OTHER)}
    for event in events:  # node events are named "<node>_kernel_time"
        if event.get("cat") == "Node" and event["ts"] >= runs[WARMUP] and event["name"].endswith("_kernel_time"):
            block_us[block_of_node(event["name"])] += event["dur"]
    if fused:
        block_us[REFINER] += 1e6 * (fused.seconds - fused_seconds)
    precision = runtime.info.precision + (" static" if runtime.static else "") + (", fused step" if fused else "")
    return Profile(f"{path.name} ({precision})", 1000 * statistics.median(frame_seconds),
                   {block: us / 1000 / frames for block, us in block_us.items()})


@dataclass
class Report:
    size: tuple
    ratio: float
    peak: Peak
    work: Dict[str, Work]
    profiles: List[Profile]

    def share_of_peak(self, profile: Profile, block: str) -> Optional[float]:
        """The block's roofline ceiling over its measured time (1.0: at the hardware's limit)."""
        spent = profile.block_ms[block]
        return self.work[block].ceiling_ms(self.peak) / spent if spent > 0 else None

    def as_dict(self) -> dict:
        return {"size": list(self.size), "ratio": self.ratio, "peak": asdict(self.peak),
                "work": {block: asdict(work) for block, work in self.work.items()},
                "ceiling_ms": {block: work.ceiling_ms(self.peak) for block, work in self.work.items()},
                "profiles": [{**asdict(p), "share_of_peak": {block: self.share_of_peak(p, block)
                                                             for block in p.block_ms}} for p in self.profiles]}


def run_profiles(model, artifacts: Sequence[str], size, ratio: float, frames: int,
                 full_resolution_steps: Sequence[str] = ("auto",)) -> Report:
    from rvm.measure.bench import sample_frame
    src = sample_frame(*size)
    peak = machine_peak()
    log.info("peak here: %.0f GFLOP/s fp32 GEMM, %.1f GB/s memory copy", peak.gflops, peak.gbytes)
    profiles = [pytorch_profile(model, src, ratio, frames)]
    for path in artifacts:
        for step in full_resolution_steps:
            log.info("profiling %s (full-resolution step: %s)", path, step)
            profiles.append(onnx_profile(path, src, ratio, frames, full_resolution_step=step))
    return Report(tuple(size), ratio, peak, block_work(model, size, ratio), profiles)


def to_markdown(report: Report) -> str:
    size, ratio, profiles, peak = report.size, report.ratio, report.profiles, report.peak
    header = ["block", *(p.name for p in profiles)]
    lines = [f"Per-block time at {size[0]}x{size[1]}, ratio {ratio}: ms a frame (share of the profiled time)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for block in (*BLOCKS, OTHER):
        cells = [f"{p.block_ms[block]:.1f} ({100 * p.share(block):.0f}%)" for p in profiles]
        lines.append(f"| {block} | " + " | ".join(cells) + " |")
    lines.append("| **frame (wall, median)** | " + " | ".join(f"**{p.frame_ms:.1f}**" for p in profiles) + " |")
    lines += ["", f"How far from the hardware: this machine's measured peak is {peak.gflops:.0f} GFLOP/s (fp32 GEMM) "
                  f"and {peak.gbytes:.1f} GB/s (memory copy). Work per block (GFLOPs; MB read and written, unfused), "
                  f"its roofline ceiling, and each backend's share of peak (ceiling / measured time):", "",
              "| block | GFLOPs | MB moved | ceiling ms | " + " | ".join(f"{p.name} share of peak" for p in profiles)
              + " |", "|" + "---|" * (4 + len(profiles))]
    total = Work(sum(w.gflops for w in report.work.values()), sum(w.mbytes for w in report.work.values()))
    for block in (*BLOCKS, OTHER):
        work = report.work[block]
        shares = [report.share_of_peak(p, block) for p in profiles]
        lines.append(f"| {block} | {work.gflops:.2f} | {work.mbytes:.0f} | {work.ceiling_ms(peak):.2f} | "
                     + " | ".join("" if s is None else f"{100 * s:.0f}%" for s in shares) + " |")
    ceiling = sum(w.ceiling_ms(peak) for w in report.work.values())
    lines.append(f"| **frame** | {total.gflops:.2f} | {total.mbytes:.0f} | **{ceiling:.1f}** | "
                 + " | ".join(f"{100 * ceiling / p.frame_ms:.0f}%" for p in profiles) + " |")
    return "\n".join(lines)

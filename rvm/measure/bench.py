"""`rvm bench`: tensor throughput, end-to-end conversion throughput and peak memory per backend, each as a
ratio to PyTorch eager fp32 measured in the same run. Ratios, not absolute numbers, are what carry across
noisy machines. Every row is also proven against PyTorch within its registered bounds, so the summary can give the
speed of what a user may deploy over what they would run instead: the fastest proven artifact, and the fastest
`exact` one (alpha MAD at most `rvm.tuning.EXACT_MAD`), each over the official ONNX download in the same run.
"""
import logging
import multiprocessing
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from rvm import formats, machine
from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.errors import BackendError, UsageError, one_line
from rvm.targets import OFFICIAL, PEERS, REFERENCE, Target
from rvm.targets import targets as all_targets
from rvm.tuning import EXACT_MAD

log = logging.getLogger(__name__)

PROOF_FRAMES = 8  # recurrent frames each row is proven over (at the first resolution)
DEFAULT_BACKENDS = (REFERENCE.name, *(name for name, entry in formats.FORMATS.items() if entry.in_bench))


@dataclass
class TensorResult:
    name: str
    precision: str
    resolution: str
    downsample_ratio: float
    device: str = "cpu"
    fps: Optional[float] = None
    ratio_to_pytorch: Optional[float] = None
    status: str = "ok"
    reason: str = ""
    repeat_fps: List[float] = field(default_factory=list)  # one per repeat, in the order they were taken
    # proven against PyTorch fp32 within the row's registered bounds (at the first resolution), and its alpha MAD
    proven: Optional[bool] = None
    mad: Optional[float] = None


@dataclass
class ConversionResult:
    name: str
    precision: str
    resolution: str
    frames: int
    pipelined_fps: float  # `convert_video`: decode, inference and encode overlapped
    sequential_fps: float  # `convert_video` with `pipeline=False`: the same per-frame code on one thread
    plain_fps: float  # `plain_conversion`: an official-style loop, same backend and encoder settings
    speedup: float  # pipelined over the plain loop, same backend, same run
    speedup_over_sequential: float  # what the overlap alone buys
    tensor_fps: Optional[float]
    share_of_tensor: Optional[float]  # pipelined conversion fps / tensor fps
    rounds: dict = field(default_factory=dict)  # plain/sequential/pipelined -> fps of each round, in order


def parse_resolutions(text: str) -> List[Tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UsageError(f"resolution {item!r} is not WIDTHxHEIGHT (e.g. 1920x1080)") from None
        sizes.append((width, height))
    return sizes


def sample_frame(width: int, height: int) -> np.ndarray:
    """A real frame of footage upscaled to the size (content barely matters for speed, but keep it real)."""
    from PIL import Image

    from rvm.media.samples import validation_frames
    frame = validation_frames(1)[0]
    image = Image.fromarray(frame).resize((width, height), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)[None], dtype=np.float32) / 255


def interleaved_rates(runtimes: dict, src: np.ndarray, ratio: float, frames: int, repeats: int,
                      warmup: int = 2) -> dict:
    """frames/s per runtime and repeat, recurrent state carried, warm-up excluded. The repeats take turns
    across runtimes, so a slow spell of a noisy machine does not land on one backend alone. Each turn starts with
    one untimed frame: the runtime before it leaves caches and freed pages cold (without it, the ONNX row that
    follows PyTorch eager read 23-25% below the same session's settings row of the same run, twice)."""
    for runtime in runtimes.values():
        runtime.reset()
        for _ in range(warmup):
            runtime.run_nchw(src, ratio)
    rates = {key: [] for key in runtimes}
    for _ in range(repeats):
        for key, runtime in runtimes.items():
            runtime.run_nchw(src, ratio)
            started = time.perf_counter()
            for _ in range(frames):
                runtime.run_nchw(src, ratio)
            rates[key].append(frames / (time.perf_counter() - started))
    return rates


def build_artifacts(model, targets: Sequence[Target], size: Tuple[int, int], ratio: float,
                    calibration: Optional[str] = None) -> dict:
    """(name, precision) -> path, or the exception that stopped its export; static rows at `size` and `ratio`;
    precisions that need calibration calibrate on `calibration`. Artifacts come from the artifact store."""
    from rvm.exporters.store import ArtifactStore
    from rvm.measure.parity import peer_path
    store, paths = ArtifactStore(), {}
    for target in targets:
        try:
            paths[(target.name, target.precision)] = peer_path(target.peer, model) if target.peer else store.get(
                model, target.format.name, target.precision, target.export_options(size, ratio, calibration))
        except Exception as error:  # reported in the table
            paths[(target.name, target.precision)] = error
    return paths


def open_runtime(model, key, path, device, entry: Optional[formats.Format] = None):
    """The runtime of a row: PyTorch eager for the reference, else the artifact at `path` (or its export error)
    run by the row's format `entry`."""
    from rvm.runtimes import load
    from rvm.runtimes.pytorch import PyTorchRuntime
    if key == REFERENCE.key:
        return PyTorchRuntime(model, device=device, precision=key[1])
    if isinstance(path, Exception):
        raise path
    return entry.load(path, device=device) if entry is not None else load(path, device=device)


def declared_sweeps() -> list:
    """Every settings sweep the registered formats' runtimes declare (`Runtime.settings_sweeps`), with its
    runtime class, in registry order."""
    return [(runtime, sweep) for runtime in dict.fromkeys(entry.entry_point("runtime") for entry in
                                                         formats.FORMATS.values())
            for sweep in runtime.settings_sweeps()]


def run_sweep(runtime_class, sweep, path, src: np.ndarray, ratio: float, frames: int, repeats: int) -> List[dict]:
    """One declared sweep on the artifact at `path`, on the CPU."""
    return settings_sweep(list(sweep.settings),
                          lambda options: runtime_class.from_path(path, device="cpu", **options),
                          src, ratio, frames, repeats)


def sweeps_of(targets: Sequence[Target], paths: dict, src: np.ndarray, ratio: float, frames: int,
              repeats: int) -> dict:
    """sweep key -> rows, for each exported row (not a peer download) whose runtime declares a sweep of its
    precision and profile."""
    declared = declared_sweeps()
    results = {sweep.key: [] for _, sweep in declared}
    for target in targets:
        path = paths.get((target.name, target.precision))
        if target.peer is not None or not isinstance(path, Path):
            continue
        runtime_class = target.format.entry_point("runtime")
        for owner, sweep in declared:
            if owner is runtime_class and (sweep.precision, sweep.static) == (target.precision, target.is_static):
                results[sweep.key] = run_sweep(runtime_class, sweep, path, src, ratio, frames, repeats)
    return results


def settings_sweep(settings: List[dict], open_with, src: np.ndarray, ratio: float, frames: int,
                   repeats: int) -> List[dict]:
    """frames/s of one artifact opened with each of `settings`, repeats taken in turns."""
    runtimes = {i: open_with(options) for i, options in enumerate(settings)}
    rates = interleaved_rates(runtimes, src, ratio, frames, repeats)
    for runtime in runtimes.values():
        runtime.close()
    return [{**options, "fps": statistics.median(rates[i])} for i, options in enumerate(settings)]


def prove_rows(model, runtimes: dict, entries: dict, frames: Sequence[np.ndarray], ratio: float,
               scene: bool) -> dict:
    """key -> (within the row's registered bounds, alpha MAD, what exceeded them), every row against PyTorch eager
    fp32 (`runtimes[REFERENCE.key]`) over `frames` with the state carried (`rvm.compare`)."""
    from rvm.compare import compare
    proofs = {}
    for key, runtime in runtimes.items():
        if key == REFERENCE.key:
            continue
        result = compare(runtimes[REFERENCE.key], runtime, frames, ratio)
        problems = result.failures(entries[key].tolerance(key[1], model.refiner_name, scene=scene))
        proofs[key] = (not problems, result.metrics.mad, "; ".join(problems))
    return proofs


def make_test_video(path: Path, width: int, height: int, frames: int) -> Path:
    """An H.264 clip of real footage at the size (the sample clip upscaled and looped)."""
    import av
    from PIL import Image

    from rvm.media.samples import validation_frames
    source = validation_frames(58)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            frame = source[i % len(source)] if (i // len(source)) % 2 == 0 else source[-1 - i % len(source)]
            image = Image.fromarray(frame).resize((width, height), Image.BILINEAR)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def conversion_fps(runtime, video: Path, ratio: float, pipeline: bool, out: Path) -> Tuple[float, int]:
    from rvm.media.convert import ConvertRequest, convert_video
    started = time.perf_counter()
    summary = convert_video(ConvertRequest(str(video), output_composition=str(out / "composition.mp4"),
                                           output_alpha=str(out / "alpha.mp4"), downsample_ratio=ratio,
                                           overwrite=True, progress=False, pipeline=pipeline), runtime)
    return summary.frames / (time.perf_counter() - started), summary.frames


def plain_conversion_fps(runtime, video: Path, ratio: float, out: Path) -> Tuple[float, int]:
    """The baseline conversion: a plain loop in the style of the official converter, one frame at a time on one
    thread: decode, a PIL image turned into a float tensor (as its reader and ToTensor do), infer, composite,
    to bytes, encode, alpha written as RGB as its writer does. Same runtime, same encoders and settings as
    `convert_video`, so only the loop differs."""
    import torch
    from PIL import Image

    from rvm.contracts import DEFAULT_GREEN
    from rvm.media.video import VideoSink, open_source
    started = time.perf_counter()
    runtime.reset()
    background = torch.tensor(DEFAULT_GREEN, dtype=torch.float32).div(255).view(1, 3, 1, 1)
    frames = 0
    with open_source(video) as source:
        sinks = [VideoSink(out / f"plain_{name}.mp4", source.fps, source.size, overwrite=True)
                 for name in ("composition", "alpha")]
        for frame in source:
            image = np.array(Image.fromarray(frame))
            src = torch.from_numpy(image).permute(2, 0, 1).contiguous().float().div(255).unsqueeze(0)
            fgr, pha = (torch.from_numpy(x) for x in runtime.run_nchw(src.numpy(), ratio))
            composition = fgr * pha + background * (1 - pha)
            for sink, output in zip(sinks, (composition, pha.repeat(1, 3, 1, 1))):
                sink.write(output.mul(255).byte().permute(0, 2, 3, 1).numpy()[0])
            frames += 1
        for sink in sinks:
            sink.close()
    return frames / (time.perf_counter() - started), frames


def conversion_rounds(runtime, video: Path, ratio: float, out: Path, rounds: int) -> dict:
    """frames/s of the plain, sequential and pipelined conversions, taking turns for `rounds` rounds: a slow
    spell of a noisy machine then lands on all three, and the speedups compare runs of the same round."""
    runs = {"plain": [], "sequential": [], "pipelined": []}
    for _ in range(rounds):
        runs["plain"].append(plain_conversion_fps(runtime, video, ratio, out)[0])
        runs["sequential"].append(conversion_fps(runtime, video, ratio, False, out)[0])
        runs["pipelined"].append(conversion_fps(runtime, video, ratio, True, out)[0])
    return runs


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def _peak_memory_child(queue, model_source, key, path, video, ratio):
    """Runs in a fresh process so its peak memory is the conversion's own."""
    from rvm.checkpoints import load_model
    model = load_model(model_source)
    runtime = open_runtime(model, key, path, "cpu")
    with tempfile.TemporaryDirectory() as out:
        conversion_fps(runtime, video, ratio, True, Path(out))
    queue.put(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux from VmHWM: ru_maxrss survives exec, so a child spawned
    from a big parent would report the parent's size (it did: 3.9 GB for any clip length)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def peak_memory_mib(model_source, key, path, video, ratio) -> float:
    context = multiprocessing.get_context("spawn")
    if Path(model_source).exists():  # a checkpoint file: absolute for the other process, whatever its folder
        model_source = str(Path(model_source).resolve())
    if isinstance(path, (str, Path)):  # else None (the reference) or the row's export error
        path = str(Path(path).resolve())
    video = str(Path(video).resolve())
    queue = context.Queue()
    process = context.Process(target=_peak_memory_child,
                              args=(queue, model_source, key, path, video, ratio))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise BackendError(f"memory measurement of {key[0]} {key[1]} exited with code {process.exitcode}")
    return queue.get()


@dataclass(frozen=True)
class BenchRequest:
    """What `rvm bench` measures: tensor throughput of `backends` at each of `resolutions` (`frames` timed frames,
    `repeats` taking turns), each row proven at the first resolution over `proof_frames` of `clip` (else
    `$RVM_VALIDATION_CLIP`, else the sample scene and its bounds; 0 skips the proof); there too the end-to-end
    conversion of an `e2e_frames` clip (`e2e_repeats` rounds; 0 skips) and the peak memory of conversions of
    `memory_frames` frames (empty skips). Static formats are exported for the first resolution and measured there
    only; int8 rows calibrate on `calibration` (without it they are reported unavailable)."""
    backends: Sequence[str] = DEFAULT_BACKENDS
    resolutions: Sequence[Tuple[int, int]] = ((1920, 1080),)
    downsample_ratio: Union[str, float] = 0.25
    frames: int = 20
    repeats: int = 3
    e2e_frames: int = 120
    e2e_repeats: int = 5
    memory_frames: Sequence[int] = (60, 600)
    checkpoint: str = DEFAULT_CHECKPOINT  # the PyTorch reference every row is measured and proven against
    device: str = "cpu"
    calibration: Optional[str] = None
    clip: Optional[str] = None
    proof_frames: int = PROOF_FRAMES


def run_bench(request: BenchRequest) -> dict:
    """Measure `request` (see `BenchRequest`); the result holds the machine, the rows and the summary."""
    from rvm.checkpoints import load_model
    from rvm.contracts import auto_downsample_ratio
    from rvm.media.samples import default_clip, validation_frames
    model = load_model(request.checkpoint)
    resolutions, device = request.resolutions, request.device
    frames, repeats = request.frames, request.repeats
    targets = all_targets([b for b in request.backends if b in formats.FORMATS])
    tensor_rows: List[TensorResult] = []
    conversion_rows: List[ConversionResult] = []
    memory = {}
    ratios = {(w, h): auto_downsample_ratio(h, w) if request.downsample_ratio == "auto" else
              float(request.downsample_ratio) for w, h in resolutions}
    with tempfile.TemporaryDirectory() as folder:
        paths = build_artifacts(model, targets, resolutions[0], ratios[resolutions[0]], request.calibration)
        runtimes = {}
        entries = {(t.name, t.precision): t.format for t in targets}
        for key in [REFERENCE.key] + list(entries):
            try:
                runtimes[key] = open_runtime(model, key, paths.get(key), device, entries.get(key))
            except Exception as error:
                tensor_rows += [TensorResult(key[0], key[1], f"{w}x{h}", ratios[(w, h)], device, status="unavailable",
                                             reason=one_line(error)) for w, h in resolutions[:1]]
        proofs = {}
        if request.proof_frames:
            clip = request.clip or default_clip()
            log.info("proving %d rows against PyTorch on %s", len(runtimes) - 1, clip or "the sample scene")
            proofs = prove_rows(model, runtimes, entries, validation_frames(request.proof_frames, clip, resolutions[0]),
                                ratios[resolutions[0]], scene=clip is None)
        for width, height in resolutions:
            r = ratios[(width, height)]
            src = sample_frame(width, height)
            fitting = {key: runtime for key, runtime in runtimes.items()
                       if runtime.info.fixed_resolution in (None, (width, height))}
            log.info("tensor throughput at %dx%d: %s", width, height, ", ".join(f"{n} {p}" for n, p in fitting))
            rates = interleaved_rates(fitting, src, r, frames, repeats)
            baseline = rates.get(REFERENCE.key)
            for (name, precision), values in rates.items():
                # repeats of all backends take turns: the median of same-repeat ratios cancels the machine's drift
                first = (width, height) == resolutions[0]  # where the rows were proven
                proven, mad, reason = proofs.get((name, precision), (None, None, "")) if first else (None, None, "")
                tensor_rows.append(TensorResult(name, precision, f"{width}x{height}", r,
                                                runtimes[(name, precision)].info.device, statistics.median(values),
                                                median_ratio(values, baseline) if baseline else None,
                                                reason=reason, repeat_fps=values, proven=proven, mad=mad))
        # the settings sweep, end to end and memory at the first resolution
        width, height = resolutions[0]
        r = ratios[(width, height)]
        src = sample_frame(width, height)
        # the sweeps measure CPU settings: on another device they would be empty
        sweeps = sweeps_of(targets if device == "cpu" else [], paths, src, r, frames, repeats)
        # end to end: PyTorch and the fastest backend, pipelined vs sequential
        measured = [t for t in tensor_rows if t.fps and t.resolution == f"{width}x{height}"]
        fastest = max(measured, key=lambda t: t.fps) if measured else None
        if request.e2e_frames and measured:
            video = make_test_video(Path(folder) / "bench_input.mp4", width, height, request.e2e_frames)
            chosen = {REFERENCE.key, (fastest.name, fastest.precision)} & set(runtimes)
            for key in sorted(chosen):
                out = Path(folder) / "out"
                out.mkdir(exist_ok=True)
                runs = conversion_rounds(runtimes[key], video, r, out, request.e2e_repeats)
                pipelined = statistics.median(runs["pipelined"])
                tensor = next(t.fps for t in measured if (t.name, t.precision) == key)
                conversion_rows.append(ConversionResult(
                    key[0], key[1], f"{width}x{height}", request.e2e_frames, pipelined,
                    statistics.median(runs["sequential"]), statistics.median(runs["plain"]),
                    median_ratio(runs["pipelined"], runs["plain"]), median_ratio(runs["pipelined"], runs["sequential"]),
                    tensor, pipelined / tensor, runs))
        if request.memory_frames and fastest is not None:
            for count in request.memory_frames:
                video = make_test_video(Path(folder) / f"memory_{count}.mp4", width, height, count)
                key = (fastest.name, fastest.precision)
                memory[count] = peak_memory_mib(request.checkpoint, key, paths.get(key), video, r)
        for runtime in runtimes.values():
            runtime.close()
    result = {"machine": machine.summary(), "frames": frames, "repeats": repeats,
              "tensor": [asdict(t) for t in tensor_rows], "conversion": [asdict(c) for c in conversion_rows],
              **sweeps}
    if memory:
        counts = sorted(memory)
        result["peak_memory_mib"] = {"backend": f"{fastest.name} {fastest.precision}",
                                     **{str(c): memory[c] for c in counts},
                                     "ratio_longest_to_shortest": memory[counts[-1]] / memory[counts[0]]}
    result["summary"] = summarize(tensor_rows, conversion_rows)
    return result


def summarize(tensor_rows: List[TensorResult], conversion_rows: List[ConversionResult]) -> dict:
    """The headline ratios, per resolution."""
    summary = {}
    for resolution in dict.fromkeys(t.resolution for t in tensor_rows):
        rows = [t for t in tensor_rows if t.resolution == resolution and t.fps]
        if not rows:
            continue
        fastest = max(rows, key=lambda t: t.fps)
        summary[resolution] = {"fastest": f"{fastest.name} {fastest.precision}",
                               "fastest_ratio_to_pytorch": fastest.ratio_to_pytorch}
        by_key = {(t.name, t.precision): t for t in rows}
        official = by_key.get((OFFICIAL.name, OFFICIAL.precision))
        peers = {peer.name for peer in PEERS}
        ours = [t for t in rows if t.proven and t.name not in peers and (t.name, t.precision) != REFERENCE.key]
        for quality, eligible in (("proven", ours),
                                  ("exact", [t for t in ours if t.mad is not None and t.mad <= EXACT_MAD])):
            best = max(eligible, key=lambda t: t.fps, default=None)
            summary[resolution][f"fastest_{quality}"] = f"{best.name} {best.precision}" if best else None
            summary[resolution][f"fastest_{quality}_over_official"] = \
                median_ratio(best.repeat_fps, official.repeat_fps) if best and official else None
        for peer in PEERS:  # our export of the same format and precision over the official download
            ours, theirs = by_key.get((peer.format, peer.precision)), by_key.get((peer.name, peer.precision))
            # repeats of the two are taken back to back: the median of paired ratios cancels the machine's drift
            summary[resolution][f"our_{peer.format}_{peer.precision}_over_official"] = \
                median_ratio(ours.repeat_fps, theirs.repeat_fps) if ours and theirs else None
    for row in conversion_rows:
        summary.setdefault(row.resolution, {}).update({
            f"conversion_speedup_{row.name}_{row.precision}": row.speedup,
            f"conversion_speedup_over_sequential_{row.name}_{row.precision}": row.speedup_over_sequential})
    return summary


def to_markdown(result: dict) -> str:
    host = result["machine"]
    lines = [f"Machine: {host['cpu']}, {host['cores']} cores, GPU: {host['gpu'] or 'none'}; torch "
             f"{host['torch']}, onnxruntime {host['onnxruntime']}, tensorflow {host['tensorflow']}",
             "", "Tensor throughput (batch 1, recurrent state carried, median of repeats):", "",
             "| backend | precision | resolution | ratio | device | frames/s | x PyTorch fp32 | proven | alpha MAD "
             "| note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in result["tensor"]:
        fps = f"{t['fps']:.2f}" if t["fps"] else ""
        ratio = f"{t['ratio_to_pytorch']:.2f}" if t["ratio_to_pytorch"] else ""
        proven = {True: "yes", False: "no", None: ""}[t["proven"]]
        mad = "" if t["mad"] is None else f"{t['mad']:.3g}"
        lines.append(f"| {t['name']} | {t['precision']} | {t['resolution']} | {t['downsample_ratio']:g} | "
                     f"{t['device']} | {fps} | {ratio} | {proven} | {mad} | {t['reason']} |")
    for resolution, summary in result["summary"].items():
        for quality in ("proven", "exact"):
            if summary.get(f"fastest_{quality}_over_official"):
                lines.append(f"\nAt {resolution}, the fastest {quality} artifact ({summary[f'fastest_{quality}']}) "
                             f"runs {summary[f'fastest_{quality}_over_official']:.2f}x the official ONNX download"
                             + (f" (exact: alpha MAD <= {EXACT_MAD})" if quality == "exact" else ""))
    if result["conversion"]:
        lines += ["", "End-to-end conversion (H.264 in; composition + alpha H.264 out). Plain: an official-style "
                      "loop; sequential: our conversion with the overlap off; pipelined: our conversion:", "",
                  "| backend | precision | resolution | frames | plain fps | sequential fps | pipelined fps | "
                  "x plain | x sequential | share of tensor fps |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in result["conversion"]:
            lines.append(f"| {c['name']} | {c['precision']} | {c['resolution']} | {c['frames']} | "
                         f"{c['plain_fps']:.2f} | {c['sequential_fps']:.2f} | {c['pipelined_fps']:.2f} | "
                         f"{c['speedup']:.2f} | {c['speedup_over_sequential']:.2f} | {c['share_of_tensor']:.0%} |")
    for _, sweep in declared_sweeps():
        if not result.get(sweep.key):
            continue
        headings = [heading for _, heading in sweep.columns] + ["frames/s"]
        lines += ["", sweep.title, "", "| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
        lines += ["| " + " | ".join(str(s[option]) for option, _ in sweep.columns) + f" | {s['fps']:.2f} |"
                  for s in result[sweep.key]]
    if "peak_memory_mib" in result:
        memory = result["peak_memory_mib"]
        lines += ["", "Peak memory of a pipelined conversion (" + memory["backend"] + "): " +
                  ", ".join(f"{k} frames {v:.0f} MiB" for k, v in memory.items()
                            if k not in ("backend", "ratio_longest_to_shortest")) +
                  f"; ratio {memory['ratio_longest_to_shortest']:.2f}"]
    return "\n".join(lines)

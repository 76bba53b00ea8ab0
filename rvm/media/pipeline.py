"""`convert`: matte a whole video with a Runtime and write composition, alpha, foreground and RGBA outputs.

The pipeline overlaps the three kinds of work: a decode thread (frames -> float NCHW once) feeds a bounded
queue, inference runs on the calling thread (the runtime carries the recurrent state across the video), and
one encode thread per output renders and writes its frames from its own bounded queue. Memory stays flat:
at most a few chunks are in flight. The first error in any thread stops all of them and removes every
temporary output.
"""
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageColor
from tqdm import tqdm

from rvm.contracts import DEFAULT_GREEN
from rvm.errors import UsageError, VideoError
from rvm.formats import IMAGE_SUFFIXES
from rvm.media.request import BackgroundSpec, ConvertRequest
from rvm.media.video import (
    FrameSink,
    FrameSource,
    PngSequenceSink,
    VideoSink,
    check_writable,
    open_source,
)

log = logging.getLogger(__name__)

# the names a video output may take: the containers written here (an input may be any container PyAV reads)
OUTPUT_VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v", ".webm")
QUEUE_CHUNKS = 4  # chunks in flight per queue: enough to absorb jitter, small enough to keep memory flat


class ConvertError(UsageError):
    """A conversion request that cannot be carried out as given; the message says what to change."""


@dataclass
class ConvertSummary:
    frames: int
    fps: float  # the output frame rate (that of the input)
    seconds: float  # wall time of the whole job
    outputs: Dict[str, str] = field(default_factory=dict)
    state: Optional[List[np.ndarray]] = None  # the recurrent state after the last frame, for a `frame_range` job

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass
class Chunk:
    src: np.ndarray  # float32 [T,3,H,W] in 0..1
    background: Optional[np.ndarray]  # float32 [T|1,3,H,W], or None where no output composites
    fgr: Optional[np.ndarray] = None
    pha: Optional[np.ndarray] = None


# ---- rendering: float NCHW model outputs -> the frames each output shows, still float (the sinks quantise) ----

def _render_composition(chunk: Chunk) -> torch.Tensor:
    fgr, pha = torch.from_numpy(chunk.fgr), torch.from_numpy(chunk.pha)
    if chunk.background is None:  # the official PNG-sequence composition: foreground with its alpha
        return torch.cat([fgr * (pha > 0), pha], dim=1)
    return torch.lerp(torch.from_numpy(chunk.background), fgr, pha)  # fgr*pha + bg*(1-pha)


def _render_alpha(chunk: Chunk) -> torch.Tensor:
    return torch.from_numpy(chunk.pha)


def _render_foreground(chunk: Chunk) -> torch.Tensor:
    return torch.from_numpy(chunk.fgr)


def _render_rgba(chunk: Chunk) -> torch.Tensor:
    return torch.cat([torch.from_numpy(chunk.fgr), torch.from_numpy(chunk.pha)], dim=1)


RENDERERS: Dict[str, Callable[[Chunk], torch.Tensor]] = {
    "composition": _render_composition, "alpha": _render_alpha,
    "foreground": _render_foreground, "rgba": _render_rgba,
}


@dataclass
class Output:
    name: str  # a RENDERERS key
    path: Path
    png_sequence: bool
    sink: Optional[FrameSink] = None

    def write(self, chunk: Chunk) -> None:
        for frame in RENDERERS[self.name](chunk):
            self.sink.write(frame)


def plan_outputs(paths: Dict[str, Optional[Union[str, Path]]], output_type: str, input_path: Path,
                  overwrite: bool) -> List[Output]:
    """Every output checked before any work: kind of name, clashes, and existing files."""
    if output_type not in ("video", "png_sequence"):
        raise ConvertError(f"output_type must be 'video' or 'png_sequence', got {output_type!r}")
    outputs = []
    for name, path in paths.items():
        if path is None:
            continue
        path = Path(path)
        png_sequence = output_type == "png_sequence" and name != "rgba"
        if name == "rgba" and path.suffix.lower() not in (".mov", ".webm"):
            raise ConvertError(f"RGBA output {path} must end in .mov (ProRes 4444) or .webm (VP9 with alpha)")
        if not png_sequence and path.suffix.lower() not in OUTPUT_VIDEO_SUFFIXES:
            raise ConvertError(f"{name} output {path} needs a video name ({', '.join(OUTPUT_VIDEO_SUFFIXES)}), "
                               f"or pass output_type='png_sequence' (--output-type png_sequence) for a frame folder")
        check_writable(path, overwrite)
        outputs.append(Output(name, path, png_sequence))
    if not outputs:
        raise ConvertError("no output asked for: pass at least one of --output-composition, --output-alpha, "
                           "--output-foreground, --output-rgba")
    resolved = [o.path.resolve() for o in outputs]
    for i, path in enumerate(resolved):
        if path == input_path.resolve():
            raise ConvertError(f"{outputs[i].name} output {outputs[i].path} is the input: choose another path")
        if path in resolved[:i]:
            raise ConvertError(f"two outputs write to {outputs[i].path}: give each output its own path")
    return outputs


# ---- background ------------------------------------------------------------------------------------

def parse_color(text: str) -> Tuple[int, int, int]:
    """`R,G,B`, `#rrggbb` or a CSS colour name."""
    parts = text.split(",")
    try:
        if len(parts) == 3:
            color = tuple(int(p) for p in parts)
        else:
            color = ImageColor.getrgb(text.strip())[:3]
    except ValueError:
        color = None
    if color is None or not all(0 <= c <= 255 for c in color):
        raise ConvertError(f"background {text!r} is neither a file nor a colour: use R,G,B (0..255), #rrggbb, "
                           f"a colour name, or an image/video path")
    return color


def background_frames(background: BackgroundSpec, size: Tuple[int, int]) -> Iterator[np.ndarray]:
    """Float32 backgrounds, one per frame: [1,3,1,1] for a colour, [1,3,H,W] for an image or a video (which loops
    when shorter than the input)."""
    width, height = size
    if isinstance(background, (str, Path)) and not Path(background).exists():
        background = parse_color(str(background))
    if background is None or isinstance(background, (tuple, list)):
        color = DEFAULT_GREEN if background is None else tuple(background)
        if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
            raise ConvertError(f"background colour must be 3 values in 0..255, got {background}")
        # [1,3,1,1]: the composition broadcasts it, no full-size plane per frame to build and carry
        return _repeat(np.asarray(color, np.float32).reshape(1, 3, 1, 1) / 255)
    path = Path(background)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as image:
                image = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))
        except OSError as error:
            raise VideoError(f"cannot read background image {path}: {error}: pass a readable image") from None
        return _repeat(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    open_source(path, size).close()  # fail now, not mid-job, on an unreadable background video
    return _looping_video(path, size)


def _repeat(frame: np.ndarray) -> Iterator[np.ndarray]:
    while True:
        yield frame


def _looping_video(path: Path, size: Tuple[int, int]) -> Iterator[np.ndarray]:
    while True:
        with open_source(path, size) as source:
            for frame in source:
                yield frame.transpose(2, 0, 1)[None].astype(np.float32) / 255


# ---- the job ---------------------------------------------------------------------------------------

def to_nchw(frames: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 RGB HWC frames -> float32 [T,3,H,W] in 0..1."""
    height, width, _ = frames[0].shape
    src = torch.empty((len(frames), 3, height, width))
    for slot, frame in zip(src, frames):
        slot.copy_(torch.from_numpy(frame).permute(2, 0, 1))  # cast and layout change in one pass
    src.mul_(1 / 255)  # 4x less CPU than stacking, permuting and dividing into new arrays at 1080p
    return src.numpy()


def _decoded_chunks(source, backgrounds: Optional[Iterator[np.ndarray]], seq_chunk: int) -> Iterator[Chunk]:
    """Group frames by `seq_chunk` and convert them to float NCHW once, with their backgrounds."""
    frames = []

    def chunk() -> Chunk:
        background = None if backgrounds is None else np.concatenate([next(backgrounds) for _ in frames])
        src = to_nchw(frames)
        frames.clear()
        return Chunk(src, background)

    for frame in source:
        frames.append(frame)
        if len(frames) == seq_chunk:
            yield chunk()
    if frames:
        yield chunk()


def _infer(runtime, chunk: Chunk, ratio) -> Chunk:
    # runtimes batch along B, not time: frames go one by one so the recurrent state flows through them all
    results = [runtime.run_nchw(chunk.src[t:t + 1], ratio) for t in range(len(chunk.src))]
    if len(results) == 1:  # the usual seq_chunk=1: no copy on the inference thread, the pipeline's critical path
        chunk.fgr, chunk.pha = results[0]
    else:
        chunk.fgr = np.concatenate([fgr for fgr, _ in results])
        chunk.pha = np.concatenate([pha for _, pha in results])
    return chunk


class _Stopped(Exception):
    """Raised inside a stage when another stage failed: it unwinds quietly, the first error is reported."""


class _Stages:
    """Threads joined by bounded queues; the first error anywhere stops every stage."""

    def __init__(self):
        self.failed = threading.Event()
        self.error: Optional[BaseException] = None
        self.threads: List[threading.Thread] = []

    def fail(self, error: BaseException) -> None:
        if self.error is None and not isinstance(error, _Stopped):
            self.error = error
        self.failed.set()

    def start(self, name: str, body: Callable[[], None]) -> None:
        def guarded():
            try:
                body()
            except BaseException as error:  # reported by the calling thread after join
                self.fail(error)
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def put(self, q: queue.Queue, item) -> None:
        while not self.failed.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.failed.is_set():
                    raise _Stopped() from None

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        if self.error is not None:
            raise self.error


def _run_pipelined(chunks: Iterator[Chunk], runtime, ratio, outputs: List[Output],
                   update: Callable[[int], None]) -> int:
    stages = _Stages()
    decoded = queue.Queue(QUEUE_CHUNKS)
    to_encode = [queue.Queue(QUEUE_CHUNKS) for _ in outputs]

    def decode():
        for chunk in chunks:
            stages.put(decoded, chunk)
        stages.put(decoded, None)

    def encode(output: Output, inbox: queue.Queue):
        while (chunk := stages.get(inbox)) is not None:
            output.write(chunk)

    stages.start("rvm-decode", decode)
    for output, inbox in zip(outputs, to_encode):
        stages.start(f"rvm-encode-{output.name}", lambda o=output, q=inbox: encode(o, q))
    frames = 0
    try:
        while (chunk := stages.get(decoded)) is not None:
            _infer(runtime, chunk, ratio)
            for inbox in to_encode:
                stages.put(inbox, chunk)
            frames += len(chunk.src)
            update(len(chunk.src))
        for inbox in to_encode:
            stages.put(inbox, None)
    except BaseException as error:
        stages.fail(error)
    stages.join()
    return frames


def _run_sequential(chunks: Iterator[Chunk], runtime, ratio, outputs: List[Output],
                    update: Callable[[int], None]) -> int:
    frames = 0
    for chunk in chunks:
        _infer(runtime, chunk, ratio)
        for output in outputs:
            output.write(chunk)
        frames += len(chunk.src)
        update(len(chunk.src))
    return frames


def convert(runtime, request: ConvertRequest, on_frames: Optional[Callable[[int], None]] = None,
            frame_range: Optional[Tuple[int, int]] = None,
            initial_state: Optional[Sequence[np.ndarray]] = None) -> ConvertSummary:
    """Matte `request.input_source` (video file or image folder) with `runtime` and write the requested outputs.

    `runtime`: any `rvm.runtimes.Runtime`; it is reset first and left open (`request.model` is not read here).
    `on_frames(n)` is called as frames complete.

    `frame_range=(start, stop)` converts only those frames (a segment of a long job; no audio is copied) and
    returns the recurrent state after the last one in `summary.state`; `initial_state` starts from a state so
    taken instead of zeros, so that segments run one after another give the frames of one whole run.
    `request.input_source` may also be an open `FrameSource` (the caller closes it); with `frame_range` its
    iteration must continue at `start`, as consecutive segments over one source leave it, so nothing is decoded
    twice.
    """
    started = time.perf_counter()
    input_source = request.input_source
    opened = not isinstance(input_source, FrameSource)
    input_path = Path(input_source) if opened else input_source.path
    if request.seq_chunk < 1:
        raise ConvertError(f"seq_chunk must be >= 1, got {request.seq_chunk}")
    if frame_range is not None and not 0 <= frame_range[0] < frame_range[1]:
        raise ConvertError(f"frame_range must be (start, stop) with 0 <= start < stop, got {frame_range}")
    if request.output_video_mbps is not None and request.output_video_mbps <= 0:
        raise ConvertError(f"output_video_mbps must be > 0, got {request.output_video_mbps}")
    outputs = plan_outputs(request.outputs, request.output_type, input_path, request.overwrite)
    source = open_source(input_path, request.input_resize) if opened else input_source
    try:
        composites = any(o.name == "composition" for o in outputs)
        if composites and request.background is None and request.output_type == "png_sequence":
            composites = False  # official behaviour: foreground with alpha instead of a colour
        backgrounds = background_frames(request.background, source.size) if composites else None
        check_runtime_fits(runtime, source.size, request.downsample_ratio)
        runtime.reset()
        if initial_state is not None:
            runtime.state = initial_state
        summary = _convert(source, runtime, request, outputs, backgrounds, on_frames, frame_range, skip=opened)
    finally:
        if opened:
            source.close()
    summary.seconds = time.perf_counter() - started
    log.info("converted %d frames in %.1f s (%.1f frames/s): %s", summary.frames, summary.seconds,
             summary.frames_per_second, ", ".join(summary.outputs.values()))
    return summary


def check_runtime_fits(runtime, size: Tuple[int, int], downsample_ratio,
                       resize_flag: str = "--input-resize {} {}") -> None:
    """Fail before any work when a fixed-size artifact cannot take `size` or the ratio is invalid; `resize_flag`
    is how the verb's user asks for another size."""
    width, height = size
    fixed = runtime.info.fixed_resolution
    if fixed is not None and tuple(fixed) != (width, height):
        raise ConvertError(f"the {runtime.backend} artifact takes {fixed[0]}x{fixed[1]} frames only and the input is "
                           f"{width}x{height}: pass {resize_flag.format(*fixed)}")
    try:
        runtime.resolve_ratio(height, width, downsample_ratio)
    except (TypeError, ValueError) as error:
        raise ConvertError(f"{error}: pass a number in (0, 1] or 'auto'") from None


def _convert(source, runtime, request: ConvertRequest, outputs: List[Output], backgrounds, on_frames, frame_range,
             skip: bool) -> ConvertSummary:
    audio_from = source.path if source.audio is not None and frame_range is None else None
    frames_in, total = source, source.frame_count
    if frame_range is not None:
        start, stop = frame_range
        frames_in = itertools.islice(source, start, stop) if skip else itertools.islice(source, stop - start)
        if backgrounds is not None:  # a looping background video keeps its place in the whole job
            backgrounds = itertools.islice(backgrounds, start, None)
        total = None if total is None else max(0, min(stop, total) - start)
    try:
        for output in outputs:
            output.sink = (PngSequenceSink(output.path, request.overwrite) if output.png_sequence else
                           VideoSink(output.path, source.fps, source.size, alpha=output.name == "rgba",
                                     mbps=request.output_video_mbps, audio_from=audio_from,
                                     overwrite=request.overwrite))
        chunks = _decoded_chunks(frames_in, backgrounds, request.seq_chunk)
        run = _run_pipelined if request.pipeline else _run_sequential
        with tqdm(total=total, unit="frame", desc="rvm convert", disable=not request.progress) as bar:
            update = bar.update if on_frames is None else lambda n: (bar.update(n), on_frames(n))
            frames = run(chunks, runtime, request.downsample_ratio, outputs, update)
        for output in outputs:
            output.sink.close()
            output.sink = None
    except BaseException:
        for output in outputs:
            if output.sink is not None:
                output.sink.abort()
        raise
    state = runtime.state if frame_range is not None else None
    return ConvertSummary(frames, float(Fraction(source.fps)), 0.0, {o.name: str(o.path) for o in outputs}, state)

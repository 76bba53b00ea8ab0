"""Live sinks: where matted frames go. Each runs on its own thread (see `rvm.live.session`).

A sink is checked before capture starts (`prepare`: a file that exists, a port in use, no virtual camera), opened
at the source's size (`open`), written frame by frame, and closed at the end (`close`: a recording is finalised and
playable) or aborted when the session could not start. Frames are rendered by the conversion pipeline's renderers
(`rvm.media.pipeline.RENDERERS`), and compositions use its backgrounds, so live and `rvm convert` draw the same
pictures.
"""
import dataclasses
import logging
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from rvm.errors import MissingDependency, UsageError
from rvm.media.pipeline import RENDERERS, BackgroundSpec, Chunk, background_frames, plan_outputs
from rvm.media.video import VideoSink, to_uint8_hwc

log = logging.getLogger(__name__)
Size = Tuple[int, int]
BLUR = "blur"  # the background spec that keeps the camera's own background, blurred


@dataclass
class Matted:
    chunk: Chunk  # src, fgr, pha: float32 [1,C,H,W] numpy; background None (each sink sets its own)
    captured: float  # time.perf_counter() when the source delivered the frame
    index: int  # position among the frames inference took since the session started


class Backdrop:
    """The background a composition is drawn on: a colour, an image, a looping video (as `rvm convert --background`
    takes them), or `blur`: the frame itself, blurred."""

    def __init__(self, spec: BackgroundSpec = None):
        self.spec = spec
        self._frames = None

    def open(self, size: Size) -> None:
        if self.spec != BLUR:
            self._frames = background_frames(self.spec, size)

    def behind(self, chunk: Chunk) -> Chunk:
        if self.spec == BLUR:
            src = torch.from_numpy(chunk.src)
            height, width = src.shape[-2:]
            # a box blur at 1/16 of the size, scaled back: strong enough to hide the room, ~1 ms at 720p
            factor = max(1, min(height, width) // 24)
            small = F.avg_pool2d(src, factor, ceil_mode=True)
            background = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False).numpy()
        else:
            background = next(self._frames)
        return dataclasses.replace(chunk, background=background)


def rendered(kind: str, chunk: Chunk, size: Size) -> torch.Tensor:
    """The `kind` picture (a RENDERERS key) of the frame, float [C,H,W], at `size` (a sink opened at the source's
    first size keeps it when the source comes back at another)."""
    frame = RENDERERS[kind](chunk)
    if tuple(frame.shape[-1:-3:-1]) != tuple(size):
        frame = F.interpolate(frame, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    return frame[0]


class LiveSink:
    name = "sink"

    def prepare(self) -> None:
        """Check what can be checked before the source opens; raise UsageError with the fix."""

    def open(self, size: Size, fps: Fraction, session) -> None:
        """Open at the source's size and rate; `session` is the LiveSession (for sinks that control it)."""
        self.size = size

    def write(self, matted: Matted) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish: everything written is kept."""

    def abort(self) -> None:
        """The session could not start: keep nothing."""
        self.close()

    def release(self) -> None:
        """Free what `prepare` took (a bound port) when the session does not start."""


class RecordingSink(LiveSink):
    """A video file of `kind` (composition, alpha, foreground or rgba) written as `rvm convert` writes it."""

    def __init__(self, path, kind: str = "composition", background: BackgroundSpec = None, overwrite: bool = False,
                 source_name: str = ""):
        self.path, self.kind, self.overwrite = Path(path), kind, overwrite
        self.name = f"recording-{kind}"
        self.backdrop = Backdrop(background) if kind == "composition" else None
        self._source_name = source_name
        self._sink: Optional[VideoSink] = None

    def prepare(self) -> None:
        plan_outputs({self.kind: self.path}, "video", Path(self._source_name or "."), self.overwrite)

    def open(self, size: Size, fps: Fraction, session) -> None:
        super().open(size, fps, session)
        if self.backdrop is not None:
            self.backdrop.open(size)
        self._sink = VideoSink(self.path, fps, size, alpha=self.kind == "rgba", overwrite=self.overwrite)
        self._fps, self._started, self._pts = float(self._sink.fps), None, -1

    def write(self, matted: Matted) -> None:
        chunk = matted.chunk if self.backdrop is None else self.backdrop.behind(matted.chunk)
        # time stamps from the capture times: frames dropped upstream leave gaps, and the file plays in real time
        if self._started is None:
            self._started = matted.captured
        pts = max(self._pts + 1, round((matted.captured - self._started) * self._fps))
        self._sink.write(rendered(self.kind, chunk, self.size), pts)
        self._pts = pts

    def close(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.close()
            log.info("recorded %d frames to %s", sink.frames, self.path)

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None


class RawSink(LiveSink):
    """Raw RGBA frames (straight alpha), one after another, on a byte stream (stdout) for FFmpeg or GStreamer;
    their size and rate go to stderr as the command line that reads them."""

    name = "raw"

    def __init__(self, stream: Optional[BinaryIO] = None, announce: bool = True):
        self.stream, self.announce = stream, announce

    def open(self, size: Size, fps: Fraction, session) -> None:
        super().open(size, fps, session)
        self.stream = self.stream or sys.stdout.buffer
        if self.announce:
            print(f"raw RGBA {size[0]}x{size[1]} at {float(fps):g} fps on stdout: read it with "
                  f"ffmpeg -f rawvideo -pix_fmt rgba -video_size {size[0]}x{size[1]} -framerate {float(fps):g} -i -",
                  file=sys.stderr, flush=True)

    def write(self, matted: Matted) -> None:
        try:
            self.stream.write(to_uint8_hwc(rendered("rgba", matted.chunk, self.size)).tobytes())
            self.stream.flush()
        except BrokenPipeError:
            raise UsageError("the program reading stdout closed it: the raw RGBA stream has no reader") from None


PROBE_SIZE = (640, 360)
VIRTUAL_CAMERA_HELP = ("on Linux load v4l2loopback (`sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                       "card_label=RVM`); on Windows and macOS install OBS Studio and start its Virtual Camera once")


class VirtualCameraSink(LiveSink):
    """The composition on a colour, an image or the blurred camera background, as a virtual camera
    (pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on Windows and macOS)."""

    name = "virtual-camera"

    def __init__(self, background: BackgroundSpec = BLUR, device: Optional[str] = None,
                 backend: Optional[str] = None):
        self.backdrop = Backdrop(background)
        self.device, self.backend = device or None, backend
        self._camera = None

    def prepare(self) -> None:
        # the camera's size is the source's, known once it opens; a probe at a common size fails now, before the
        # source opens, where no virtual camera exists at all
        self._start(PROBE_SIZE, 30.0).close()

    def _start(self, size: Size, fps: float):
        try:
            import pyvirtualcam
        except ImportError:
            raise MissingDependency("the virtual camera", "live", "pyvirtualcam") from None
        try:
            return pyvirtualcam.Camera(size[0], size[1], fps, fmt=pyvirtualcam.PixelFormat.RGB, device=self.device,
                                       backend=self.backend)
        except (RuntimeError, KeyError) as error:
            reason = " / ".join(str(error).splitlines()) or type(error).__name__
            raise UsageError(f"no virtual camera could start ({reason}): {VIRTUAL_CAMERA_HELP}") from None

    def open(self, size: Size, fps: Fraction, session) -> None:
        super().open(size, fps, session)
        self.backdrop.open(size)
        self._camera = self._start(size, float(fps))
        log.info("virtual camera %s (%s) at %dx%d", self._camera.device, self._camera.backend, *size)

    def write(self, matted: Matted) -> None:
        frame = rendered("composition", self.backdrop.behind(matted.chunk), self.size)
        self._camera.send(np.ascontiguousarray(to_uint8_hwc(frame)))

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None

"""Live sources: uint8 RGB HWC frames as they happen.

`FileSource` plays a video file (or image folder) at its own frame rate, as a camera would deliver it (and again
from the start with `loop`). `CaptureSource` opens a camera (V4L2 on Linux, AVFoundation on macOS, DirectShow on
Windows) or a network stream (RTSP, HTTP, UDP, SRT) through PyAV's FFmpeg; the requested size and rate go to the
device, and what it granted is reported. A source may be opened again after it ended or failed (`open` after
`close`): the session does so with backoff when a camera disappears or a stream drops.
"""
import logging
import platform
import time
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import av
import numpy as np

from rvm.errors import UsageError, VideoError
from rvm.media.video import open_source

log = logging.getLogger(__name__)
Size = Tuple[int, int]
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "srt://", "rtmp://", "tcp://")
HTTP_SCHEMES = ("http://", "https://")  # a file served over HTTP(S) may be finite: see CaptureSource
READ_TIMEOUT_S = 5.0  # a stream silent this long has dropped


class LiveSource:
    """`open()`, then iterate `frames()` until it ends or raises, then `close()`; `open()` again to restart."""

    name: str
    loops = False  # its end starts it again (a looping file) rather than ending the session
    live = False  # its end is a fault to recover from (a camera or a stream), not the end of the input
    size: Size
    fps: Fraction

    def open(self) -> None:
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> Dict:
        """What was asked for and what was granted, for the stats and the log."""
        return {"source": self.name, "size": f"{self.size[0]}x{self.size[1]}", "fps": round(float(self.fps), 3)}


class Pacer:
    """Frames of a file at its frame rate, as a camera delivers them: never faster, and after falling behind no
    burst to catch up. Kept across loops: pacing does not restart with the file."""

    def __init__(self):
        self._next_due: Optional[float] = None

    def paced(self, frames: Iterator[np.ndarray], fps: Fraction) -> Iterator[np.ndarray]:
        interval = 1 / float(fps)
        for frame in frames:
            now = time.perf_counter()
            if self._next_due is None or self._next_due < now - interval:  # first frame, or fell behind
                self._next_due = now
            elif self._next_due > now:
                time.sleep(self._next_due - now)
            self._next_due += interval
            yield frame


class FileSource(LiveSource):
    """A video file or image folder delivered at its frame rate (or `fps`), resized to `size` if given."""

    def __init__(self, path, size: Optional[Size] = None, fps: Optional[float] = None, loop: bool = False):
        self.path, self.requested_size, self.requested_fps, self.loops = Path(path), size, fps, loop
        self.name = str(path)
        self._source = None
        self._pacer = Pacer()

    def open(self) -> None:
        self._source = open_source(self.path, self.requested_size)
        self.size = self._source.size
        self.fps = Fraction(self.requested_fps).limit_denominator(1001) if self.requested_fps else self._source.fps

    def frames(self) -> Iterator[np.ndarray]:
        return self._pacer.paced(iter(self._source), self.fps)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


def capture_input(spec: str, system: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(FFmpeg input name, FFmpeg input format) for a camera index, device name or URL."""
    system = system or platform.system()
    if spec.startswith(NETWORK_SCHEMES):
        return spec, None
    if spec.isdigit():
        if system == "Linux":
            return f"/dev/video{spec}", "v4l2"
        if system == "Darwin":
            return f"{spec}:none", "avfoundation"
        raise UsageError(f"camera {spec}: DirectShow opens cameras by name: pass --input-source 'video=NAME' "
                         f"(list them with `ffmpeg -list_devices true -f dshow -i dummy`)")
    if spec.startswith("video="):
        return spec, "dshow"
    if spec.startswith("/dev/video"):
        return spec, "v4l2"
    if system == "Darwin" and not Path(spec).exists():
        return spec, "avfoundation"  # a camera name
    raise UsageError(f"{spec} is neither a camera (an index, /dev/videoN, video=NAME), a stream URL "
                     f"({', '.join(s.rstrip(':/') for s in NETWORK_SCHEMES)}) nor an existing video file")


class CaptureSource(LiveSource):
    """A camera or network stream through FFmpeg (PyAV). A file served over HTTP(S) (the server gives its length)
    is finite, as a local file is: played at its frame rate, its end ends the session, or starts it again with
    `loop`; everything else is live, and its end is a fault to recover from."""

    def __init__(self, spec: str, size: Optional[Size] = None, fps: Optional[float] = None, loop: bool = False):
        self.name = spec
        self.input, self.format = capture_input(spec)
        self.requested_size, self.requested_fps, self.loop = size, fps, loop
        self._container = None
        self.finite = False
        self._pacer = Pacer()

    @property
    def live(self) -> bool:
        return not self.finite

    @property
    def loops(self) -> bool:
        return self.finite and self.loop

    def _options(self) -> Dict[str, str]:
        options = {}
        if self.format is not None:  # a device: ask for the size and rate (it grants what it can)
            if self.requested_size:
                options["video_size"] = "{}x{}".format(*self.requested_size)
            if self.requested_fps:
                options["framerate"] = f"{self.requested_fps:g}"
        elif self.input.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"  # UDP loses packets (smeared frames) on any busy network
        return options

    def open(self) -> None:
        try:
            self._container = av.open(self.input, format=self.format, options=self._options(),
                                      timeout=(READ_TIMEOUT_S, READ_TIMEOUT_S))
        except (av.error.FFmpegError, OSError) as error:
            raise VideoError(f"cannot open {self.name}: {getattr(error, 'strerror', None) or error}") from None
        if not self._container.streams.video:
            self.close()
            raise VideoError(f"{self.name} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self.fps = Fraction(stream.average_rate or stream.guessed_rate or self.requested_fps or 30)
        self.finite = self.input.startswith(HTTP_SCHEMES) and (self._container.size or 0) > 0

    def frames(self) -> Iterator[np.ndarray]:
        decoded = (frame.to_ndarray(format="rgb24") for frame in self._container.decode(self._stream))
        try:
            yield from self._pacer.paced(decoded, self.fps) if self.finite else decoded
        except (av.error.FFmpegError, OSError) as error:
            raise VideoError(f"{self.name} failed: {getattr(error, 'strerror', None) or error}") from None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def describe(self) -> Dict:
        described = super().describe()
        if self.requested_size:
            described["requested_size"] = "{}x{}".format(*self.requested_size)
        if self.requested_fps:
            described["requested_fps"] = self.requested_fps
        return described


def open_live_source(spec, size: Optional[Size] = None, fps: Optional[float] = None,
                     loop: bool = False) -> LiveSource:
    """A `FileSource` for an existing file or folder, else a `CaptureSource` (camera index, device or URL)."""
    spec = str(spec)
    if Path(spec).exists() and not spec.startswith("/dev/video"):
        return FileSource(spec, size, fps, loop)
    if loop and not spec.startswith(HTTP_SCHEMES):
        raise UsageError(f"--loop replays a video file (local or over HTTP); {spec} is a camera or stream (or a file "
                         f"that does not exist)")
    return CaptureSource(spec, size, fps, loop)

"""What the video/convert/CLI tests share: the reference runtime on the real weights, and short real clips.

The person clips are 162x92: at downsample ratio 0.5 the network sees 81x46 px and returns an empty matte,
so conversions here run at 'auto' (1.0 for these sizes), on a few frames to keep the suite fast.
"""
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch

from rvm.media.video import VideoSink, read_frames
from rvm.model import MattingNetwork

from .conftest import CLIPS, DGF_WEIGHTS, need

SHORT_FRAMES = 4  # inference dominates test time: a few real frames per conversion


@lru_cache(maxsize=1)
def reference_model() -> MattingNetwork:
    model = MattingNetwork("mobilenetv3")
    # the shared weights carry no segmentation head (project_seg.*): not needed for matting
    missing, unexpected = model.load_state_dict(torch.load(need(DGF_WEIGHTS), map_location="cpu"), strict=False)
    assert not unexpected and all(key.startswith("project_seg.") for key in missing)
    return model


def reference_runtime():
    from rvm.runtimes.pytorch import PyTorchRuntime
    return PyTorchRuntime(reference_model(), device="cpu")


def short_clip(folder: Path, name: str = "person_a", frames: int = SHORT_FRAMES, audio: bool = False,
               size=None) -> Path:
    """The first `frames` frames of a real clip as an H.264 mp4 (20 fps), with a sine-tone AAC track if asked."""
    path = folder / f"{name}_{frames}{'_audio' if audio else ''}.mp4"
    images = read_frames(need(CLIPS / f"{name}.mp4"), frames, size)
    with VideoSink(path, 20, (images[0].shape[1], images[0].shape[0])) as sink:
        for image in images:
            sink.write(image)
    if audio:
        _add_tone(path, seconds=frames / 20)
    return path


def _add_tone(path: Path, seconds: float, rate: int = 44100) -> None:
    """Remux `path` with a mono AAC sine tone of `seconds` added."""
    muxed = path.with_name(path.stem + "_tmp.mp4")
    with av.open(str(path)) as source, av.open(str(muxed), "w") as output:
        video_in = source.streams.video[0]
        video_out = output.add_stream_from_template(video_in)
        audio_out = output.add_stream("aac", rate=rate, layout="mono")
        samples = np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 440 / rate).astype(np.float32) * 0.3
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            output.mux(audio_out.encode(frame))
        output.mux(audio_out.encode(None))
        for packet in source.demux(video_in):
            if packet.dts is not None:
                packet.stream = video_out
                output.mux(packet)
    muxed.replace(path)


def image_folder(folder: Path, frames: int = SHORT_FRAMES) -> Path:
    """The first frames of the shared person_a PNG sequence, linked (not copied) into a folder."""
    folder.mkdir()
    for png in sorted(need(CLIPS / "person_a_png").glob("*.png"))[:frames]:
        (folder / png.name).symlink_to(png)
    return folder


def png_alphas(folder: Path) -> np.ndarray:
    """[T,H,W] float alpha in 0..1 from a PNG-sequence alpha output."""
    return np.stack([f[..., 0] for f in read_frames(folder)]).astype(np.float32) / 255

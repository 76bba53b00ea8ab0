"""Frame sources and sinks on the real clips: decode, encode, alpha round trips, audio, and every bad input."""
import os

import av
import numpy as np
import pytest
import torch

from rvm.media.video import (
    PngSequenceSink,
    VideoError,
    VideoSink,
    mean_2x2,
    open_source,
    read_frames,
    read_rgba,
    to_yuv420p,
)

from .conftest import CLIPS, need
from .video_helpers import image_folder, short_clip


def decoded(path):
    """(frame count, (width, height), fps) of a written video, by decoding every frame."""
    with open_source(path) as source:
        count = sum(1 for _ in source)
        return count, source.size, float(source.fps)


def test_video_source_reports_the_clip():
    with open_source(need(CLIPS / "person_a.mp4")) as source:
        assert (source.frame_count, source.size, float(source.fps), source.audio) == (58, (162, 92), 20.0, None)
        frames = list(source)
    assert len(frames) == 58 and frames[0].shape == (92, 162, 3) and frames[0].dtype == np.uint8


def test_image_sequence_matches_the_video():
    png = read_frames(need(CLIPS / "person_a_png"), 5)
    mp4 = read_frames(CLIPS / "person_a.mp4", 5)
    assert len(png) == 5 and png[0].shape == mp4[0].shape
    assert np.abs(png[0].astype(int) - mp4[0]).mean() < 8  # same footage, mp4 compression apart


def test_resize_to_an_odd_size():
    frames = read_frames(need(CLIPS / "person_narrow.mp4"), 3, (51, 91))
    assert [f.shape for f in frames] == [(91, 51, 3)] * 3


def test_h264_at_odd_size_keeps_size_count_and_fps(tmp_path):
    frames = read_frames(need(CLIPS / "person_narrow.mp4"), 6, (51, 91))
    with VideoSink(tmp_path / "odd.mp4", 20, (51, 91), mbps=1) as sink:
        assert sink.pix_fmt == "yuv444p"  # 4:2:0 needs even sizes: 4:4:4 keeps the exact size, no padding
        for frame in frames:
            sink.write(frame)
    assert decoded(tmp_path / "odd.mp4") == (6, (51, 91), 20.0)
    assert np.abs(read_frames(tmp_path / "odd.mp4")[3].astype(int) - frames[3]).mean() < 6
    assert os.listdir(tmp_path) == ["odd.mp4"]


# ProRes 4444 (10-bit) only rounds; VP9 is lossy, a few levels at textured edges
@pytest.mark.parametrize("suffix, tolerance", [(".mov", 1), (".webm", 24)])
def test_alpha_survives_the_rgba_round_trip(tmp_path, suffix, tolerance):
    frames = read_frames(need(CLIPS / "person_a.mp4"), 5)
    # a real-looking matte: a soft horizontal ramp plus the frame's own luminance
    ramp = np.linspace(0, 255, 162)[None, :].repeat(92, 0)
    alphas = [((ramp + f.mean(-1)) / 2).astype(np.uint8) for f in frames]
    path = tmp_path / f"rgba{suffix}"
    with VideoSink(path, 20, (162, 92), alpha=True) as sink:
        for frame, alpha in zip(frames, alphas):
            sink.write(np.dstack([frame, alpha]))
    back = read_rgba(path)
    assert len(back) == 5 and back[0].shape == (92, 162, 4)
    error = np.abs(np.stack(back)[..., 3].astype(int) - np.stack(alphas))
    assert error.max() <= tolerance and error.mean() < 2
    assert decoded(path)[1:] == ((162, 92), 20.0)


def test_read_rgba_refuses_video_without_alpha():
    with pytest.raises(VideoError, match="no alpha channel"):
        read_rgba(need(CLIPS / "person_a.mp4"))


def test_png_sequence_sink_writes_rgb_rgba_and_gray(tmp_path):
    frame = read_frames(need(CLIPS / "person_a.mp4"), 1)[0]
    for name, image in (("rgb", frame), ("rgba", np.dstack([frame, frame[..., :1]])), ("gray", frame[..., :1])):
        with PngSequenceSink(tmp_path / name) as sink:
            sink.write(image)
            sink.write(image)
        assert sorted(os.listdir(tmp_path / name)) == ["0000.png", "0001.png"]
    from PIL import Image
    assert [Image.open(tmp_path / n / "0001.png").mode for n in ("rgb", "rgba", "gray")] == ["RGB", "RGBA", "L"]


@pytest.mark.parametrize("suffix, codec", [(".mp4", "aac"), (".webm", "opus")])
def test_audio_is_copied(tmp_path, suffix, codec):
    clip = short_clip(tmp_path, frames=6, audio=True)
    with open_source(clip) as source:
        assert source.audio is not None
        path = tmp_path / f"out{suffix}"
        with VideoSink(path, source.fps, source.size, audio_from=clip) as sink:
            for frame in source:
                sink.write(frame)
    with av.open(str(path)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == [codec]  # AAC remuxed; WebM needs Opus
        assert sum(f.samples for f in container.decode(audio=0)) > 0.2 * 44100 * 0.9
    assert decoded(path)[0] == 6


def test_float_frames_become_the_planes_swscale_makes():
    """Float frames skip swscale (torch makes the yuv420p planes): the same planes, up to rounding and
    the chroma filter, for colour and grey frames."""
    for frame in read_frames(need(CLIPS / "person_a.mp4"), 3):
        for image, pixel_format in ((frame, "rgb24"), (np.ascontiguousarray(frame[..., 1]), "gray")):
            swscale = av.VideoFrame.from_ndarray(image, format=pixel_format).reformat(format="yuv420p").to_ndarray()
            ours = to_yuv420p(torch.from_numpy(image.reshape(92, 162, -1)).permute(2, 0, 1).float() / 255)
            luma, chroma = np.abs(ours.astype(int) - swscale)[:92], np.abs(ours.astype(int) - swscale)[92:]
            assert luma.max() <= 1 and chroma.max() <= 2 and chroma.mean() < 0.25, pixel_format


def test_float_frames_encode(tmp_path):
    frames = read_frames(need(CLIPS / "person_a.mp4"), 6)
    for name, images in (("rgb", frames), ("grey", [f[..., 1:2] for f in frames])):
        with VideoSink(tmp_path / f"{name}.mp4", 20, (162, 92)) as sink:
            for image in images:
                sink.write(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        back = np.stack(read_frames(tmp_path / f"{name}.mp4")).astype(int)
        assert np.abs(back[..., :images[0].shape[-1]] - np.stack(images)).mean() < 6, name  # H.264 and 4:2:0: lossy


def test_mean_2x2_is_the_2x2_average_pool():
    frame = torch.rand(3, 10, 14, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.avg_pool2d(frame[None], 2)[0]
    assert mean_2x2(frame).shape == (3, 5, 7) and torch.allclose(mean_2x2(frame), expected, atol=1e-7, rtol=0)
    assert mean_2x2(torch.arange(4.0).view(1, 2, 2)).item() == 1.5


def test_yuv420p_planes_of_known_colours():
    white, black = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    assert to_yuv420p(white).ravel().tolist() == [235] * 4 + [128, 128]  # BT.601 limited range, as swscale
    assert to_yuv420p(black).ravel().tolist() == [16] * 4 + [128, 128]
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 2, 2)
    assert to_yuv420p(red).ravel().tolist() == [81] * 4 + [90, 240]
    assert to_yuv420p(torch.full((1, 2, 2), 0.5)).ravel().tolist() == [126] * 4 + [128, 128]


def test_a_failed_write_leaves_nothing(tmp_path):
    frame = read_frames(need(CLIPS / "person_a.mp4"), 1)[0]
    for sink in (VideoSink(tmp_path / "a.mp4", 20, (162, 92)), VideoSink(tmp_path / "b.mov", 20, (162, 92), alpha=True),
                 PngSequenceSink(tmp_path / "c")):
        with pytest.raises(RuntimeError):
            with sink:
                sink.write(np.dstack([frame, frame[..., :1]]) if sink.path.suffix == ".mov" else frame)
                raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_overwrite(tmp_path):
    frame = read_frames(need(CLIPS / "person_a.mp4"), 1)[0]
    (tmp_path / "out.mp4").write_bytes(b"keep me")
    with pytest.raises(VideoError, match="already exists: pass --overwrite"):
        VideoSink(tmp_path / "out.mp4", 20, (162, 92))
    assert (tmp_path / "out.mp4").read_bytes() == b"keep me"
    with VideoSink(tmp_path / "out.mp4", 20, (162, 92), overwrite=True) as sink:
        sink.write(frame)
    assert decoded(tmp_path / "out.mp4")[0] == 1


def test_a_sink_given_no_frames_publishes_nothing(tmp_path):
    with pytest.raises(VideoError, match="no frames were written"):
        with VideoSink(tmp_path / "a.mp4", 20, (162, 92)):
            pass
    assert os.listdir(tmp_path) == []


def test_rgba_needs_mov_or_webm(tmp_path):
    with pytest.raises(VideoError, match=r"\.mov \(ProRes 4444\) or \.webm"):
        VideoSink(tmp_path / "x.mp4", 20, (162, 92), alpha=True)
    assert os.listdir(tmp_path) == []


def bad_inputs(tmp_path):
    """name -> (path, the message it must give)"""
    data = need(CLIPS / "person_a.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[:len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "empty").mkdir()
    mixed = image_folder(tmp_path / "mixed", 3)
    from PIL import Image
    Image.new("RGB", (40, 30)).save(mixed / "0001b.png")
    return {
        "missing": (tmp_path / "nope.mp4", "does not exist"),
        "truncated": (tmp_path / "truncated.mp4", "damaged, truncated or not a video"),
        "garbage": (tmp_path / "garbage.mp4", "damaged, truncated or not a video"),
        "zero frames": (tmp_path / "empty", "zero images"),
        "mixed sizes": (mixed, "0001b.png is 40x30 but 0000.png is 162x92"),
    }


def test_bad_inputs_give_one_line_errors(tmp_path):
    for name, (path, message) in bad_inputs(tmp_path).items():
        with pytest.raises(VideoError) as error:
            open_source(path)
        assert message in str(error.value), name
        assert "\n" not in str(error.value), name


def test_a_video_with_zero_frames(tmp_path):
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as container:  # a valid header and a video stream, but no frames
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 162, 92, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError, match="has zero video frames"):  # FFmpeg drops the empty stream
        open_source(path)

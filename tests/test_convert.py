"""convert_video of a ConvertRequest on real clips with the real weights: mattes, outputs, backgrounds, pipelining,
failures."""
import os

import av
import numpy as np
import pytest

from rvm.media.convert import ConvertError, ConvertRequest, convert_video, parse_color
from rvm.media.video import VideoError, open_source, read_frames, read_rgba

from .conftest import BACKGROUND, CLIPS, need
from .video_helpers import SHORT_FRAMES, image_folder, png_alphas, reference_runtime, short_clip


@pytest.fixture(scope="module")
def runtime():
    return reference_runtime()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {name: short_clip(folder, name) for name in ("person_a", "person_b", "person_c")}


def convert(source, runtime, **fields):
    return convert_video(ConvertRequest(source, progress=False, **fields), runtime)


@pytest.mark.parametrize("name", ["person_a", "person_b", "person_c"])
def test_people_get_a_real_matte(tmp_path, runtime, clips, name):
    summary = convert(clips[name], runtime, output_alpha=tmp_path / "pha", output_type="png_sequence")
    assert summary.frames == SHORT_FRAMES and summary.fps == 20.0
    alpha = png_alphas(tmp_path / "pha")
    assert alpha.shape == (SHORT_FRAMES, 92, 162)
    assert 0.1 < alpha.mean() < 0.9
    assert ((alpha > 0.9).mean(), (alpha < 0.1).mean()) > (0.1, 0.1)  # a person and a background, not mush
    # it moves with the people: edges shift between frames, the covered area changes (over 4 frames of
    # person_c the largest edge change is 0.16-0.25 depending on how the short clip was encoded)
    assert np.abs(alpha[-1] - alpha[0]).max() > 0.1 and len(set(alpha.mean(axis=(1, 2)).tolist())) == SHORT_FRAMES


def test_pipelined_sequential_and_chunked_give_the_same_outputs(tmp_path, runtime, clips):
    runs = {"pipelined": dict(), "sequential": dict(pipeline=False), "chunks of 3": dict(seq_chunk=3)}
    for name, options in runs.items():
        convert(clips["person_a"], runtime, output_type="png_sequence", output_alpha=tmp_path / name,
                output_rgba=tmp_path / f"{name}.mov", **options)
    reference = png_alphas(tmp_path / "pipelined")
    for name in runs:
        assert np.array_equal(png_alphas(tmp_path / name), reference), name
        assert np.array_equal(np.stack(read_rgba(tmp_path / f"{name}.mov")),
                              np.stack(read_rgba(tmp_path / "pipelined.mov")))


def test_outputs_decode_back_and_alpha_survives_rgba(tmp_path, runtime, clips):
    out = {"output_composition": tmp_path / "com.mp4", "output_alpha": tmp_path / "pha.mp4",
           "output_foreground": tmp_path / "fgr.mp4", "output_rgba": tmp_path / "rgba.webm"}
    summary = convert(clips["person_c"], runtime, output_video_mbps=2, **out)
    assert set(summary.outputs) == {"composition", "alpha", "foreground", "rgba"}
    for path in out.values():
        with open_source(path) as source:
            assert (sum(1 for _ in source), source.size, float(source.fps)) == (SHORT_FRAMES, (162, 92), 20.0)
    pha = np.stack(read_frames(tmp_path / "pha.mp4"))[..., 0].astype(int)
    rgba_alpha = np.stack(read_rgba(tmp_path / "rgba.webm"))[..., 3].astype(int)
    assert np.abs(rgba_alpha - pha).mean() < 3  # both lossy: H.264 and VP9


def test_image_sequence_input(tmp_path, runtime):
    folder = image_folder(tmp_path / "frames")
    summary = convert(folder, runtime, output_composition=tmp_path / "com.mp4", output_alpha=tmp_path / "pha",
                      output_type="png_sequence")
    assert summary.frames == SHORT_FRAMES and summary.fps == 30.0  # an image folder has no rate: 30, as official
    assert len(os.listdir(tmp_path / "pha")) == SHORT_FRAMES
    assert 0.1 < png_alphas(tmp_path / "pha").mean() < 0.9


def test_odd_size_input_resize(tmp_path, runtime):
    clip = short_clip(tmp_path, "person_narrow")
    summary = convert(clip, runtime, input_resize=(51, 91), output_composition=tmp_path / "com.mp4",
                      output_rgba=tmp_path / "rgba.mov")
    assert summary.frames == SHORT_FRAMES
    with open_source(tmp_path / "com.mp4") as source:
        assert (sum(1 for _ in source), source.size) == (SHORT_FRAMES, (51, 91))
    assert read_rgba(tmp_path / "rgba.mov")[0].shape == (91, 51, 4)


def test_audio_is_copied_into_video_outputs(tmp_path, runtime):
    clip = short_clip(tmp_path, audio=True)
    convert(clip, runtime, output_composition=tmp_path / "com.mp4", output_rgba=tmp_path / "rgba.mov")
    for name in ("com.mp4", "rgba.mov"):
        with av.open(str(tmp_path / name)) as container:
            assert [s.codec_context.name for s in container.streams.audio] == ["aac"], name


def composite_parts(folder):
    return [np.stack(read_frames(folder / part)).astype(np.float32) / 255 for part in ("com", "fgr", "pha")]


@pytest.mark.parametrize("kind", ["image", "video", "color"])
def test_background_compositing(tmp_path, runtime, clips, kind):
    background = {"image": need(BACKGROUND), "video": clips["person_b"], "color": "#ff0000"}[kind]
    convert(clips["person_a"], runtime, background=background, output_type="png_sequence",
            output_composition=tmp_path / "com", output_foreground=tmp_path / "fgr", output_alpha=tmp_path / "pha")
    com, fgr, pha = composite_parts(tmp_path)
    if kind == "image":
        from PIL import Image
        bgr = np.asarray(Image.open(BACKGROUND).convert("RGB").resize((162, 92), Image.BILINEAR))[None] / 255
    elif kind == "video":
        bgr = np.stack(read_frames(clips["person_b"])) / 255
    else:
        bgr = np.array([1.0, 0, 0]).reshape(1, 1, 1, 3)
    expected = fgr * pha[..., :1] + bgr * (1 - pha[..., :1])
    assert np.abs(com - expected).max() < 3 / 255  # each part rounded to 8 bits once
    assert np.abs(com - bgr)[pha[..., 0] < 0.01].max() < 2.5 / 255  # the background shows where alpha is zero


def test_png_composition_without_background_is_rgba_like_the_official(tmp_path, runtime, clips):
    convert(clips["person_a"], runtime, output_type="png_sequence", output_composition=tmp_path / "com",
            output_alpha=tmp_path / "pha", output_foreground=tmp_path / "fgr")
    from PIL import Image
    com = np.stack([np.asarray(Image.open(tmp_path / "com" / f"{i:04d}.png")) for i in range(SHORT_FRAMES)])
    alpha = np.stack([np.asarray(Image.open(tmp_path / "pha" / f"{i:04d}.png")) for i in range(SHORT_FRAMES)])
    assert com.shape[-1] == 4 and np.array_equal(com[..., 3], alpha)
    fgr = np.stack(read_frames(tmp_path / "fgr"))
    assert np.array_equal(com[..., :3][alpha > 0], fgr[alpha > 0])  # the official fgr * (pha > 0)


def test_default_video_background_is_the_official_green(tmp_path, runtime, clips):
    convert(clips["person_a"], runtime, output_composition=tmp_path / "com.mp4", output_alpha=tmp_path / "pha.mp4")
    com = np.stack(read_frames(tmp_path / "com.mp4")).astype(int)
    clear = np.stack(read_frames(tmp_path / "pha.mp4"))[..., 0] < 2
    assert clear.mean() > 0.1
    assert np.median(np.abs(com - (120, 255, 155))[clear]) <= 2  # H.264 is lossy: the typical pixel, not every one
    assert parse_color("120,255,155") == parse_color("#78ff9b") == (120, 255, 155)


class FailingRuntime:
    """Wraps a runtime and fails on the nth frame, as a crashing backend would."""

    def __init__(self, runtime, fail_at):
        self.runtime, self.fail_at, self.frames = runtime, fail_at, 0
        self.info, self.backend = runtime.info, runtime.backend

    def reset(self):
        self.runtime.reset()

    def resolve_ratio(self, *args):
        return self.runtime.resolve_ratio(*args)

    def run_nchw(self, src, ratio):
        self.frames += 1
        if self.frames == self.fail_at:
            raise RuntimeError("backend crashed")
        return self.runtime.run_nchw(src, ratio)


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_failure_mid_video_leaves_no_output(tmp_path, runtime, clips, pipeline):
    outputs = dict(output_composition=tmp_path / "com.mp4", output_alpha=tmp_path / "pha",
                   output_rgba=tmp_path / "rgba.webm")
    with pytest.raises(RuntimeError, match="backend crashed"):
        convert(clips["person_a"], FailingRuntime(runtime, 4), pipeline=pipeline, output_type="png_sequence",
                **outputs)
    assert os.listdir(tmp_path) == []


def test_outputs_are_checked_before_any_work(tmp_path, runtime, clips):
    (tmp_path / "pha.mp4").write_bytes(b"keep me")
    never = FailingRuntime(runtime, 1)
    with pytest.raises(VideoError, match="already exists: pass --overwrite"):
        convert(clips["person_a"], never, output_composition=tmp_path / "com.mp4", output_alpha=tmp_path / "pha.mp4")
    for bad, message in [(dict(), "no output asked for"),
                         (dict(output_rgba=tmp_path / "x.mp4"), "must end in .mov"),
                         (dict(output_alpha=tmp_path / "x.avi2"), "needs a video name"),
                         (dict(output_alpha=tmp_path / "a.mp4", output_foreground=tmp_path / "a.mp4"), "two outputs"),
                         (dict(output_alpha=tmp_path / "a.mp4", downsample_ratio=1.5), r"\(0, 1\]"),
                         (dict(output_composition=tmp_path / "a.mp4", background="not-a-colour"), "neither a file")]:
        with pytest.raises(ConvertError, match=message):
            convert(clips["person_a"], never, **bad)
    assert never.frames == 0 and os.listdir(tmp_path) == ["pha.mp4"]
    assert (tmp_path / "pha.mp4").read_bytes() == b"keep me"
    convert(clips["person_a"], runtime, output_alpha=tmp_path / "pha.mp4", overwrite=True)
    assert len(read_frames(tmp_path / "pha.mp4")) == SHORT_FRAMES


def test_a_truncated_streamable_mp4_fails_mid_video_and_leaves_no_output(tmp_path, runtime):
    # web mp4s carry their index first (faststart): cut, they open fine and run out of frames mid-stream
    streamable = tmp_path / "streamable.mp4"
    with av.open(str(need(CLIPS / "person_a.mp4"))) as source, \
            av.open(str(streamable), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                output.mux(packet)
    data = streamable.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 10])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VideoError, match="is truncated: it declares 58 frames but only"):
        convert(cut, runtime, output_alpha=out / "pha.mp4", output_rgba=out / "rgba.mov")
    assert os.listdir(out) == []

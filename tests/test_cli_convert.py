"""`rvm convert` through `rvm.commands.cli.main`: the official flags, the bar (four outputs in one call), and error
exits."""
import os

import numpy as np
import pytest

from rvm.commands.cli import main
from rvm.media.video import open_source, read_frames, read_rgba

from .conftest import CLIPS, DGF_WEIGHTS, need
from .video_helpers import image_folder, short_clip


def decoded(path):
    with open_source(path) as source:
        return sum(1 for _ in source), source.size, float(source.fps)


def test_convert_writes_composition_alpha_foreground_and_prores_in_one_call(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code = main(["convert", "--checkpoint", str(need(DGF_WEIGHTS)), "--device", "cpu",
                 "--input-source", str(need(CLIPS / "person_a.mp4")), "--downsample-ratio", "auto",
                 "--output-type", "video", "--output-composition", str(out / "com.mp4"),
                 "--output-alpha", str(out / "pha.mp4"), "--output-foreground", str(out / "fgr.mp4"),
                 "--output-rgba", str(out / "rgba.mov"), "--output-video-mbps", "4", "--seq-chunk", "2",
                 "--num-workers", "0", "--disable-progress"])
    assert code == 0
    assert "58 frames at 20 fps" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["com.mp4", "fgr.mp4", "pha.mp4", "rgba.mov"]
    for name in os.listdir(out):
        assert decoded(out / name) == (58, (162, 92), 20.0), name
    pha = np.stack(read_frames(out / "pha.mp4"))[..., 0] / 255
    assert 0.1 < pha.mean() < 0.9 and pha.mean(axis=(1, 2)).std() > 1e-3  # a person, moving
    prores_alpha = np.stack(read_rgba(out / "rgba.mov"))[..., 3] / 255
    assert np.abs(prores_alpha - pha).mean() < 0.01  # ProRes keeps the matte; the H.264 alpha is lossy


def test_png_sequence_and_model_artifact_flags(tmp_path, capsys):
    clip = short_clip(tmp_path, frames=3)
    code = main(["convert", "--model", str(need(DGF_WEIGHTS)), "--input-source", str(clip), "--input-resize", "81",
                 "46", "--downsample-ratio", "1", "--output-type", "png_sequence", "--output-alpha",
                 str(tmp_path / "pha"), "--background", "0,0,255", "--output-composition", str(tmp_path / "com"),
                 "--disable-progress"])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "pha")) == ["0000.png", "0001.png", "0002.png"]
    assert read_frames(tmp_path / "com")[0].shape == (46, 81, 3)  # a background given: composited, RGB


def error_cases(tmp_path):
    """name -> (flags after --input-source, message); every case must fail before writing anything."""
    data = need(CLIPS / "person_a.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[:len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    (tmp_path / "empty").mkdir()
    mixed = image_folder(tmp_path / "mixed", 2)
    from PIL import Image
    Image.new("RGB", (10, 10)).save(mixed / "0000a.png")
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    clip = str(CLIPS / "person_a.mp4")
    out = ["--output-alpha", str(tmp_path / "new.mp4")]
    return {
        "missing file": ([str(tmp_path / "nope.mp4")] + out, "does not exist"),
        "truncated mp4": ([str(tmp_path / "truncated.mp4")] + out, "damaged, truncated or not a video"),
        "garbage file": ([str(tmp_path / "garbage.mp4")] + out, "damaged, truncated or not a video"),
        "zero frames": ([str(tmp_path / "empty")] + out, "zero images"),
        "mixed sizes": ([str(mixed)] + out, "0000a.png is 10x10 but 0000.png is 162x92"),
        "existing output": ([clip, "--output-alpha", str(tmp_path / "exists.mp4")], "already exists: pass --overwrite"),
        "rgba suffix": ([clip, "--output-rgba", str(tmp_path / "x.mp4")], "must end in .mov"),
        "bad colour": ([clip, "--output-composition", str(tmp_path / "c.mp4"), "--background", "nocolour"],
                       "neither a file nor a colour"),
        "missing checkpoint": ([clip, "--checkpoint", str(tmp_path / "none.pth")] + out, "does not exist"),
    }


def test_bad_input_gives_one_line_exit_2_and_no_output(tmp_path, capsys):
    cases = error_cases(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for name, (flags, message) in cases.items():
        code = main(["convert", "--disable-progress", "--input-source"] + flags)
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.startswith("rvm: error: ") and message in err, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err, name
        assert sorted(os.listdir(tmp_path)) == before, name  # nothing written, not even a temporary file
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep me"


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--input-source", "x.mp4", "--downsample-ratio", "half"])
    assert exit_.value.code == 2 and "expected a number in (0, 1] or 'auto'" in capsys.readouterr().err

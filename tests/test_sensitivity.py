"""`rvm sensitivity`: each unit quantized alone, measured against PyTorch fp32. The encoder's stem is where int8
hurts (docs/static-int8.md, INT8: MAD 15 alone against 0.2-0.7 for a decoder block); the test holds the sweep to
telling them apart, which a sweep that quantized the wrong nodes, or none, would not."""
import json

import pytest

from rvm.commands.cli import main
from rvm.measure.sensitivity import ALL_INT8, DEFAULT_SET, run_sensitivity, unit_of
from rvm.media.samples import validation_frames

from .conftest import CLIPS, DGF_WEIGHTS, need

FRAMES, RATIO, CALIBRATION_FRAMES = 12, 0.5, 4


@pytest.mark.parametrize("name, unit", [
    ("/backbone/features.0/features.0.0/Conv", "backbone/features.0"),
    ("/decoder/decode4/gru/ih/ih.0/Conv", "decoder/decode4"),
    ("/decoder/AveragePool", "decoder"),  # the decoder's own pooling of the image, outside any block
    ("/refiner/box_filter/Conv", "refiner"),
    ("/aspp/aspp1/aspp1.0/Conv", "aspp"),
    ("/Resize", None),
])
def test_unit_of(name, unit):
    assert unit_of(name) == unit


def test_stem_costs_more_than_a_decoder_block(model):
    frames = validation_frames(FRAMES, need(CLIPS / "person_a.mp4"))
    calibration = f"{need(CLIPS / 'person_b.mp4')},{need(CLIPS / 'person_c.mp4')}"
    rows = {row.unit: row for row in run_sensitivity(model, frames, RATIO, calibration,
                                                     ["backbone/features.0", "decoder/decode0"], CALIBRATION_FRAMES)}
    assert list(rows) == ["backbone/features.0", "decoder/decode0", DEFAULT_SET, ALL_INT8]
    stem, block = rows["backbone/features.0"], rows["decoder/decode0"]
    # measured 13.3 and 0.75 (12 frames, 4 calibration frames a clip)
    assert stem.mad > 5 * block.mad and block.mad > 0, (stem.mad, block.mad)
    assert stem.kept_in_float_by_default and not block.kept_in_float_by_default
    # the default set is under the bound; everything int8 is not
    assert rows[DEFAULT_SET].mad < 2 < rows[ALL_INT8].mad, (rows[DEFAULT_SET].mad, rows[ALL_INT8].mad)
    assert rows[ALL_INT8].int8_nodes > rows[DEFAULT_SET].int8_nodes > block.int8_nodes > stem.int8_nodes > 0


@pytest.mark.parametrize("extra, problem", [
    (["--units", "backbone/features.99"], "unknown unit(s) backbone/features.99: choose from backbone, "
                                          "backbone/features.0, backbone/features.1"),
    (["--calibration", "CLIP"], "is both a calibration source and the compared clip"),
    (["--calibration", "missing.mp4"], "calibration source missing.mp4 does not exist"),
])
def test_cli_refuses_bad_input(capsys, extra, problem):
    clip = str(need(CLIPS / "person_a.mp4"))
    argv = ["sensitivity", "--clip", clip, "--checkpoint", str(need(DGF_WEIGHTS)), "--frames", "2",
            "--calibration", str(need(CLIPS / "person_b.mp4"))]
    argv += [clip if arg == "CLIP" else arg for arg in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1, err


def test_cli_json(capsys):
    argv = ["sensitivity", "--clip", str(need(CLIPS / "person_a.mp4")), "--checkpoint", str(need(DGF_WEIGHTS)),
            "--calibration", str(need(CLIPS / "person_b.mp4")), "--frames", "3", "--calibration-frames", "2",
            "--units", "project_mat", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["unit"] for row in rows] == ["project_mat", DEFAULT_SET, ALL_INT8]
    assert all(row["mad"] >= 0 and row["dtssd"] >= 0 for row in rows)

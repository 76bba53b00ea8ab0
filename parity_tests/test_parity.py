"""The cross-backend suite: every backend and precision against PyTorch fp32 on real footage, 58 recurrent
frames, tolerances from rvm.contracts; what cannot run here is reported with its reason."""
import json
import sys

import pytest
import torch

from rvm import MattingNetwork
from rvm.parity import run_parity, to_json, to_markdown
from tests.conftest import CLIPS, DGF_WEIGHTS, OFFICIAL_ONNX, need

RUNNABLE_HERE = [("pytorch", "fp32"), ("torchscript", "fp32"), ("torchscript", "fp16"), ("onnx", "fp32"),
                 ("onnx", "fp16"), ("onnx (official download)", "fp32"), ("tf", "fp32"), ("tfjs", "int8"),
                 ("onnx static", "fp32"), ("openvino", "fp32"), ("openvino", "fp16"), ("openvino static", "fp32"),
                 ("openvino (official download)", "fp32"), ("onnx", "int8"), ("openvino", "int8"),
                 ("onnx static", "int8"), ("openvino static", "int8")]
# int8 rows calibrate on other clips than the parity clip person_a
CALIBRATION = ("person_b.mp4", "person_c.mp4")


@pytest.fixture(scope="module")
def rows():
    from exporters.validate import validation_frames
    model = MattingNetwork("mobilenetv3", "deep_guided_filter")
    model.load_state_dict(torch.load(need(DGF_WEIGHTS)), strict=False)  # no segmentation head in these weights
    frames = validation_frames(58, need(CLIPS / "person_a.mp4"))  # 324x184: the clip upscaled 2x
    assert len(frames) == 58 and frames[0].shape == (184, 324, 3)
    calibration = ",".join(str(need(CLIPS / name)) for name in CALIBRATION)
    return {(r.name, r.precision): r for r in run_parity(model.eval(), frames, 0.5, official_onnx_path=need(OFFICIAL_ONNX),
                                                         calibration=calibration)}


@pytest.mark.parametrize("name,precision", RUNNABLE_HERE)
def test_backend_matches_pytorch(rows, name, precision):
    row = rows[(name, precision)]
    assert row.status in ("ok", "reference"), f"{name} {precision}: {row.status}: {row.reason}"
    assert row.frames >= 50
    if row.status == "ok":
        assert row.pha_max <= row.tolerance_max[0] and row.fgr_max <= row.tolerance_max[1]
        assert row.pha_mean <= row.tolerance_mean[0] and row.fgr_mean <= row.tolerance_mean[1]
        # no drift through the recurrent state: the error at the end is not growing away from the start
        assert not (row.drift > 2.0 and row.pha_mean > 1e-5), f"drift {row.drift:.2f}x"


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS CoreML runs and is held to its tolerance above")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_coreml_reported_with_reason_off_macos(rows, precision):
    row = rows[("coreml", precision)]
    assert row.status == "unavailable"
    assert "macOS" in row.reason


def test_table_and_json_list_every_row(rows):
    table = to_markdown(list(rows.values()))
    for name, precision in list(rows):
        assert f"| {name} | {precision} |" in table
    data = json.loads(json.dumps(to_json(list(rows.values()), {"clip": "person_a.mp4"})))
    assert {(r["name"], r["precision"]) for r in data["rows"]} == set(rows)
    assert all(r["status"] != "fail" for r in data["rows"])

"""OpenVINO: IR export (dynamic and static; fp32, fp16, int8) validated like every format, the OpenVINO
runtime (CPU plugin here) with the state kept between frames, and the official ONNX download in it too."""
import json

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'rvm-toolkit[openvino]'")

from rvm import formats  # noqa: E402
from rvm.compare import compare  # noqa: E402
from rvm.errors import UsageError  # noqa: E402
from rvm.exporters import export  # noqa: E402
from rvm.formats import ExportOptions  # noqa: E402
from rvm.iospec import spec_path, state_shapes  # noqa: E402
from rvm.media.samples import validation_frames  # noqa: E402
from rvm.runtimes import load  # noqa: E402
from rvm.runtimes.pytorch import PyTorchRuntime  # noqa: E402
from rvm.targets import targets  # noqa: E402

from .artifact_helpers import (  # noqa: E402
    FRAMES,
    STATIC_RATIO,
    STATIC_SIZE,
    ColourOrderSwapped,
    StateZeroedEveryFrame,
    assert_refuses_other_sizes,
    assert_state_round_trips,
    calibration,
    failures,
)
from .conftest import OFFICIAL_ONNX, need  # noqa: E402

RATIO = 0.5


@pytest.fixture(scope="module")
def clip():
    return validation_frames(FRAMES)


STATIC_OPTIONS = ExportOptions(static=True, resolution=STATIC_SIZE, downsample_ratio=STATIC_RATIO, validation_frames=3)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_dynamic_ir_matches_pytorch(model, clip, store, precision):
    path = store.get(model, "openvino", precision, ExportOptions(validation_frames=3))
    assert path.name == f"rvm_mobilenetv3_openvino_{precision}" and (path / "model.xml").exists()
    assert formats.detect(path).name == "openvino" and formats.detect(path / "model.xml").name == "openvino"
    with load(path, device="cpu") as runtime:
        assert runtime.info.precision == precision and runtime.info.metadata.variant == "mobilenetv3"
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, clip, RATIO)
        assert failures(result, "openvino", precision) == []
        if precision == "fp32":  # the bounds can fail: a runtime that loses its state is caught
            broken = compare(PyTorchRuntime(model, device="cpu"), StateZeroedEveryFrame(runtime), clip, RATIO)
            assert failures(broken, "openvino", "fp32")
            # another resolution in the same dynamic model
            small = runtime.step(np.zeros((92, 162, 3), np.uint8), 0.5)
            assert small["pha"].shape == (92, 162, 1)


def test_state_round_trips_through_numpy(model, clip, store):
    path = store.get(model, "openvino", "fp32", ExportOptions(validate=False))
    with load(path, device="cpu") as runtime:
        assert_state_round_trips(runtime, clip[:4], RATIO)


def test_static_ir_with_spec(model, clip, store):
    path = store.get(model, "openvino", "fp32", STATIC_OPTIONS)
    assert path.name == "rvm_mobilenetv3_openvino_fp32_324x184_s0.5"
    spec = json.loads(spec_path(path).read_text())
    assert spec["format"] == "openvino" and all(i["dtype"] == "float32" for i in spec["inputs"])
    assert [i["shape"] for i in spec["inputs"][1:]] == [list(s) for s in
                                                         state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO)]
    with load(path, device="cpu") as runtime:
        assert runtime.info.fixed_resolution == STATIC_SIZE and runtime.info.baked_downsample_ratio == STATIC_RATIO
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, clip, STATIC_RATIO)
        assert failures(result, "openvino", "fp32") == []
        assert_refuses_other_sizes(runtime)


def test_stateful_form_matches_state_ports(model, clip, store):
    """OpenVINO's stateful model (state in ReadValue/Assign variables) computes what the default form does, its
    state reads out and restores, and the bench measures both; a dynamic IR is refused (state shapes unknown)."""
    from rvm.measure.bench import run_sweep
    from rvm.runtimes.openvino import OpenVinoRuntime
    path = store.get(model, "openvino", "fp32", STATIC_OPTIONS)
    with load(path, device="cpu") as ports, load(path, device="cpu", state="stateful") as stateful:
        assert type(stateful).__name__ == "StatefulOpenVinoRuntime"
        for frame in clip[:5]:
            np.testing.assert_allclose(stateful.step(frame)["pha"], ports.step(frame)["pha"], atol=1e-6)
        for mine, theirs in zip(stateful.state, ports.state):
            np.testing.assert_allclose(mine, theirs, atol=1e-6)
        stateful.reset()
        assert_state_round_trips(stateful, clip[:4], shapes=state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO))
    src = np.ascontiguousarray(clip[0].transpose(2, 0, 1)[None], np.float32) / 255
    (declared,) = OpenVinoRuntime.settings_sweeps()
    sweep = run_sweep(OpenVinoRuntime, declared, path, src, STATIC_RATIO, frames=1, repeats=1)
    assert [(row["state"], row["fps"] > 0) for row in sweep] == [("requests", True), ("stateful", True)]
    dynamic = store.get(model, "openvino", "fp32", ExportOptions(validate=False))
    with pytest.raises(UsageError, match="the stateful form needs a static artifact") as error:
        load(dynamic, device="cpu", state="stateful")
    assert "\n" not in str(error.value)


def test_official_onnx_download_runs_in_openvino(model, clip):
    """The registry's peer row: the official file run by the OpenVINO runtime, not ONNX Runtime."""
    (peer,) = [t for t in targets(["openvino"]) if t.peer is not None]
    with peer.format.load(need(OFFICIAL_ONNX), device="cpu") as runtime:
        assert runtime.backend == "openvino" and runtime.info.metadata is None
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, clip, RATIO)
    assert failures(result, "openvino", "fp32") == []


def test_int8_calibrated_with_flowing_state(model, clip, tmp_path, capfd):
    """Exported here, not taken from the store: what the export prints is part of the test."""
    options = ExportOptions(calibration=calibration(), validation_frames=3)
    path = export(model, "openvino", "int8", tmp_path, options=options)
    # stdout is `rvm bench --json`'s data: NNCF's log and progress bar must not land there
    assert "nncf" not in capfd.readouterr().out.lower()
    with load(path, device="cpu") as runtime:
        assert runtime.info.precision == "int8"
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, clip, RATIO)
        assert failures(result, "openvino", "int8") == []
        broken = compare(PyTorchRuntime(model, device="cpu"), ColourOrderSwapped(runtime), clip, RATIO)
    assert failures(broken, "openvino", "int8"), (broken.pha_mean, broken.fgr_mean)


def test_parity_rows_from_the_registry():
    """Static rows and the peer come from the registry; int8 rows carry calibration only when given one."""
    rows = {(t.name, t.precision): t for t in targets(["onnx", "openvino"])}
    assert {("onnx static", "fp32"), ("onnx static", "int8"), ("openvino static", "fp32"),
            ("openvino static", "int8"), ("openvino (official download)", "fp32")} <= set(rows)
    options = rows[("openvino static", "int8")].export_options((324, 184), 0.5, "clips/b.mp4")
    assert options.static and options.resolution == (324, 184) and options.calibration == "clips/b.mp4"
    assert rows[("openvino", "fp32")].export_options((324, 184), 0.5, "clips/b.mp4").calibration is None

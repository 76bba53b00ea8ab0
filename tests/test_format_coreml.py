"""CoreML export: .mlmodel (neural network, fp16 / int8 weights) and .mlpackage (ML program, fp16).

On Linux the spec is what can be checked (names, types, shapes, optional zero-default states, weight
precision, metadata) plus the traced graph that was converted; prediction runs on macOS only.
"""
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

from rvm import formats  # noqa: E402
from rvm.errors import UsageError, ValidationError  # noqa: E402
from rvm.exporters import ExportOptions, export  # noqa: E402
from rvm.exporters.coreml import trace_fixed_size  # noqa: E402
from rvm.model import MattingNetwork  # noqa: E402
from rvm.runtimes import BackendUnavailable, load  # noqa: E402
from rvm.runtimes.coreml import describe  # noqa: E402

from .conftest import CLIPS, DGF_WEIGHTS, need  # noqa: E402

RESOLUTION, RATIO = (160, 96), 0.5
# r1..r4 at 160x96, ratio 0.5: the 80x48 downsampled frame at strides 2, 4, 8, 16 (ceil)
STATE_SHAPES = [[1, 16, 24, 40], [1, 20, 12, 20], [1, 40, 6, 10], [1, 64, 3, 5]]
JOBS = {"mlmodel_fp16": ("fp16", "mlmodel"), "mlmodel_int8": ("int8", "mlmodel"),
        "mlpackage_fp16": ("fp16", "mlpackage")}
ON_MACOS = sys.platform == "darwin"


@pytest.fixture(scope="module")
def model():
    net = MattingNetwork("mobilenetv3", "deep_guided_filter")
    # the ONNX-derived weights carry no segmentation head, which matting never uses
    missing = net.load_state_dict(torch.load(need(DGF_WEIGHTS), map_location="cpu"), strict=False).missing_keys
    assert all(key.startswith("project_seg.") for key in missing)
    return net.eval()


def options(kind="mlmodel", resolution=RESOLUTION, ratio=RATIO, **extra):
    # validation frames come from the real clip (only run on macOS, where CoreML predicts)
    return ExportOptions(resolution=resolution, downsample_ratio=ratio, kind=kind,
                         validation_clip=str(need(CLIPS / "person_a.mp4")), **extra)


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    return {name: export(model, "coreml", precision, out, options=options(kind))
            for name, (precision, kind) in JOBS.items()}


@pytest.mark.parametrize("name, file_name", [
    ("mlmodel_fp16", "rvm_mobilenetv3_160x96_s0.5_fp16.mlmodel"),
    ("mlmodel_int8", "rvm_mobilenetv3_160x96_s0.5_int8.mlmodel"),
    ("mlpackage_fp16", "rvm_mobilenetv3_160x96_s0.5_fp16.mlpackage"),
])
def test_official_file_names_and_nothing_else_left(artifacts, name, file_name):
    path = artifacts[name]
    assert path.name == file_name
    assert path.is_dir() == (path.suffix == ".mlpackage")
    expected = [p.name for p in artifacts.values()] + [p.name + ".iospec.json" for p in artifacts.values()]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(expected)  # each with its I/O spec, no leftovers


@pytest.mark.parametrize("name", JOBS)
def test_io_spec_beside_the_artifact_gives_the_true_shapes(artifacts, name):
    spec = json.loads((artifacts[name].parent / (artifacts[name].name + ".iospec.json")).read_text())
    assert spec["resolution"] == list(RESOLUTION) and spec["downsample_ratio"] == RATIO
    assert [i["name"] for i in spec["inputs"]] == ["src", "r1i", "r2i", "r3i", "r4i"]
    assert [i["shape"] for i in spec["inputs"][1:]] == STATE_SHAPES == [o["shape"] for o in spec["outputs"][2:]]
    assert spec["inputs"][0]["shape"] == [1, 3, RESOLUTION[1], RESOLUTION[0]] and spec["inputs"][0]["color"] == "RGB"
    assert all(i["dtype"] == "float32" for i in spec["inputs"])


@pytest.mark.parametrize("name", JOBS)
def test_spec_inputs_and_outputs(artifacts, name):
    facts = describe(artifacts[name])
    assert facts["kind"] == ("mlProgram" if name.startswith("mlpackage") else "neuralNetwork")
    # iOS14 neural network (spec 5) / iOS15 ML program (spec 6)
    assert facts["specification_version"] == (6 if name.startswith("mlpackage") else 5)
    src, *states = facts["inputs"]
    assert src == {"name": "src", "type": "imageType", "optional": False, "width": 160, "height": 96, "color": "RGB"}
    assert [s["name"] for s in states] == ["r1i", "r2i", "r3i", "r4i"]
    for state, shape in zip(states, STATE_SHAPES):
        # optional with a zero default: clients omit the states on the first frame
        assert (state["type"], state["shape"], state["optional"], state["default"]) == \
               ("multiArrayType", shape, True, 0.0)
    fgr, pha, *new_states = facts["outputs"]
    assert (fgr["name"], fgr["type"], fgr["color"], fgr["width"], fgr["height"]) == ("fgr", "imageType", "RGB", 160, 96)
    assert (pha["name"], pha["type"], pha["color"], pha["width"], pha["height"]) == \
           ("pha", "imageType", "GRAYSCALE", 160, 96)
    assert [(s["name"], s["shape"]) for s in new_states] == list(zip(["r1o", "r2o", "r3o", "r4o"], STATE_SHAPES))


@pytest.mark.parametrize("name, precision", [("mlmodel_fp16", "fp16"), ("mlmodel_int8", "int8"),
                                             ("mlpackage_fp16", "fp16")])
def test_weight_precision(artifacts, name, precision):
    facts = describe(artifacts[name])
    assert facts["weight_precision"] == precision
    assert facts["weight_fractions"][precision] > 0.99, facts["weight_fractions"]


def test_int8_is_about_half_the_fp16_size(artifacts):
    fp16, int8 = artifacts["mlmodel_fp16"].stat().st_size, artifacts["mlmodel_int8"].stat().st_size
    assert 0.4 < int8 / fp16 < 0.6


@pytest.mark.parametrize("name", JOBS)
def test_metadata(artifacts, name):
    facts = describe(artifacts[name])
    meta = facts["metadata"]
    precision, kind = JOBS[name]
    assert {k: meta[k] for k in ("format", "variant", "refiner", "precision", "downsample_ratio", "resolution",
                                 "coreml_kind")} == {
        "format": "coreml", "variant": "mobilenetv3", "refiner": "deep_guided_filter", "precision": precision,
        "downsample_ratio": "0.5", "resolution": "160x96", "coreml_kind": kind}
    assert meta["coremltools_version"] and meta["torch_version"] and meta["export_time"]
    assert "rvm-toolkit" in facts["author"]
    assert "160x96" in facts["short_description"] and "0.5" in facts["short_description"]


def test_traced_graph_matches_the_network_over_recurrent_frames(model):
    """The converted graph (the traced wrapper) is MattingNetwork at that size and ratio, images scaled
    to 0..255, and zero states behave like the network's own None states (first frame)."""
    from rvm.media.samples import validation_frames
    traced, shapes = trace_fixed_size(model, RESOLUTION, RATIO)
    assert [list(s) for s in shapes] == STATE_SHAPES
    frames = validation_frames(8, need(CLIPS / "person_a.mp4"), RESOLUTION)
    traced_states = [torch.zeros(s) for s in shapes]
    states = [None] * 4
    alpha_peak = 0.0
    with torch.no_grad():
        for frame in frames:
            src = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))[None].float() / 255
            fgr, pha, *traced_states = traced(src, *traced_states)
            ref_fgr, ref_pha, *states = model(src, *states, downsample_ratio=RATIO)
            assert torch.allclose(fgr / 255, ref_fgr, atol=1e-5)
            assert torch.allclose(pha / 255, ref_pha, atol=1e-5)
            alpha_peak = max(alpha_peak, float(pha.max()))
    assert 0.3 * 255 < alpha_peak <= 255  # a real matte was compared, in image scale
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(traced_states, states))


def test_full_hd_portrait_export(model, tmp_path):
    """The official 1920x1080 s0.25 configuration converts at full size."""
    path = export(model, "coreml", "fp16", tmp_path, options=options(resolution=(1920, 1080), ratio=0.25))
    assert path.name == "rvm_mobilenetv3_1920x1080_s0.25_fp16.mlmodel"
    facts = describe(path)
    assert (facts["inputs"][0]["width"], facts["inputs"][0]["height"]) == (1920, 1080)
    assert facts["inputs"][1]["shape"] == [1, 16, 135, 240]
    assert facts["outputs"][5]["shape"] == [1, 64, 17, 30]


@pytest.mark.parametrize("precision, opts, message", [
    ("fp16", ExportOptions(kind="mlmodel"), "--resolution"),
    ("fp16", ExportOptions(resolution=RESOLUTION, kind="mlmodel"), "--downsample-ratio"),
    ("int8", ExportOptions(resolution=RESOLUTION, downsample_ratio=RATIO, kind="mlpackage"), "fp16 only"),
    ("fp32", ExportOptions(resolution=RESOLUTION, downsample_ratio=RATIO), "supports fp16, int8"),
])
def test_refusals_leave_nothing(model, tmp_path, precision, opts, message):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        export(model, "coreml", precision, out, options=opts)
    assert not out.exists() or not any(out.iterdir())


def test_failed_spec_check_removes_the_artifact(model, tmp_path, monkeypatch):
    import rvm.exporters.coreml as coreml_exporter
    monkeypatch.setattr(coreml_exporter, "spec_problems", lambda *args: ["pha is not an image"])
    with pytest.raises(ValidationError, match="pha is not an image"):
        export(model, "coreml", "fp16", tmp_path, options=options("mlpackage"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(ON_MACOS, reason="on macOS CoreML predicts; the Linux refusal does not apply")
def test_runtime_refuses_prediction_off_macos(artifacts):
    reason = r"CoreML prediction needs macOS; this is .*runtimes\.coreml\.describe\(path\)"
    with pytest.raises(BackendUnavailable, match=reason):
        load(artifacts["mlmodel_fp16"])


@pytest.mark.skipif(not ON_MACOS, reason="CoreML prediction needs macOS; on Linux the spec is checked instead")
@pytest.mark.parametrize("name", JOBS)
def test_prediction_matches_pytorch_on_macos(model, artifacts, name):
    from rvm.compare import compare
    from rvm.media.samples import validation_frames
    from rvm.runtimes.pytorch import PyTorchRuntime
    precision = JOBS[name][0]
    frames = validation_frames(30, need(CLIPS / "person_a.mp4"), RESOLUTION)
    with load(artifacts[name], device="cpu") as runtime:
        assert runtime.info.fixed_resolution == RESOLUTION and runtime.info.baked_downsample_ratio == RATIO
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, frames, RATIO)
    problems = result.failures(formats.get("coreml").tolerance(precision))
    assert not problems, problems

"""ONNX export end to end: exported through `exporters.export`, reloaded with a plain
`onnxruntime.InferenceSession` fed by position as third-party code does, run over 30 recurrent frames of a
real clip and compared with PyTorch; agreement with the official download; refusal and failure paths."""
import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rvm import formats
from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import UsageError, ValidationError
from rvm.exporters import export
from rvm.formats import ExportOptions, Tolerance

from .conftest import OFFICIAL_ONNX, RATIO, fgf_model, max_errors, need, pytorch_outputs

NUMPY_TYPES = {"fp32": np.float32, "fp16": np.float16}


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    """Each precision exported once, validated on a few frames (the tests below run 30)."""
    out = tmp_path_factory.mktemp("onnx")
    return {p: export(model, "onnx", p, out, options=ExportOptions(validation_frames=3)) for p in NUMPY_TYPES}


def cpu_session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_positional(session, frames, ratio, dtype):
    """As third-party clients do: inputs by position, zero states of shape [1,1,1,1], outputs [0] fgr [1] pha."""
    inputs = [i.name for i in session.get_inputs()]
    rec = [np.zeros((1, 1, 1, 1), dtype)] * 4
    outputs = []
    for frame in frames:
        fgr, pha, *rec = session.run(None, dict(zip(inputs, [frame.astype(dtype), *rec,
                                                             np.array([ratio], np.float32)])))
        outputs.append((fgr, pha))
    return outputs


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plain_session_matches_pytorch_over_recurrent_frames(artifacts, frames, reference, precision):
    path = artifacts[precision]
    assert path.name == f"rvm_mobilenetv3_{precision}.onnx"
    outputs = run_positional(cpu_session(path), frames, RATIO, NUMPY_TYPES[precision])
    assert outputs[0][0].dtype == NUMPY_TYPES[precision]
    pha_err, fgr_err = max_errors(outputs, reference)
    bounds = formats.get("onnx").tolerance(precision)
    pha_tol, fgr_tol = bounds.pha_max, bounds.fgr_max
    assert pha_err <= pha_tol and fgr_err <= fgr_tol, (precision, pha_err, fgr_err)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_contract_and_metadata(artifacts, precision):
    graph = onnx.load(str(artifacts[precision]))
    onnx.checker.check_model(graph, full_check=True)
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [12]
    assert [i.name for i in graph.graph.input] == list(ONNX_INPUTS)
    assert [o.name for o in graph.graph.output] == list(ONNX_OUTPUTS)
    element = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
    types = {v.name: v.type.tensor_type for v in list(graph.graph.input) + list(graph.graph.output)}
    assert all(types[name].elem_type == element for name in ONNX_INPUTS[:5] + ONNX_OUTPUTS)
    ratio = types["downsample_ratio"]
    assert ratio.elem_type == onnx.TensorProto.FLOAT and [d.dim_value for d in ratio.shape.dim] == [1]
    for name in ("src", "r1i", "fgr", "pha", "r4o"):  # batch, height and width symbolic
        dims = types[name].shape.dim
        assert all(dims[axis].dim_param for axis in (0, 2, 3)), name
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["format"] == "onnx" and metadata["precision"] == precision
    assert metadata["variant"] == "mobilenetv3" and metadata["refiner"] == "deep_guided_filter"
    assert metadata["onnx_version"] == onnx.__version__ and json.loads(metadata["simplified"]) is True


def test_dynamic_resolution_in_one_session(artifacts, frames):
    session = cpu_session(artifacts["fp32"])
    small = frames[0][:, :, ::2, ::2].copy()  # 162x92
    for frame in (frames[0], small, frames[1][:, :, :160, :250].copy()):
        fgr, pha = run_positional(session, [frame, frame], 0.5, np.float32)[-1]
        assert fgr.shape == frame.shape and pha.shape == (1, 1) + frame.shape[2:]
    batch = np.concatenate([frames[0], frames[5]])
    fgr, pha = run_positional(session, [batch], 0.5, np.float32)[0]
    assert pha.shape == (2, 1, 184, 324)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_fp32_export_agrees_with_official_download(artifacts, frames, ratio):
    """Same frames, same [1,1,1,1] zero states, same ratio, 10 recurrent frames: within 1e-4."""
    ours = run_positional(cpu_session(artifacts["fp32"]), frames[:10], ratio, np.float32)
    official = run_positional(cpu_session(need(OFFICIAL_ONNX)), frames[:10], ratio, np.float32)
    for (fgr, pha), (official_fgr, official_pha) in zip(ours, official):
        assert np.abs(pha - official_pha).max() <= 1e-4 and np.abs(fgr - official_fgr).max() <= 1e-4


def test_fast_guided_filter_exports(frames, tmp_path):
    """The FGF (eps 1e-5) amplifies float32 rounding at a few pixels, as in torch itself (2.3e-3 from fp64):
    its export is validated against the refiner's fp32 floor, and its mean error stays DGF-tight."""
    model = fgf_model()
    path = export(model, "onnx", "fp32", tmp_path, options=ExportOptions(validation_frames=4))
    outputs = run_positional(cpu_session(path), frames[:10], RATIO, np.float32)
    reference = pytorch_outputs(model, frames[:10])
    assert max(max_errors(outputs, reference)) <= formats.get("onnx").tolerance("fp32", "fast_guided_filter").pha_max
    assert np.mean([np.abs(p - r[1]).mean() for (_, p), r in zip(outputs, reference)]) <= 1e-5


def test_fast_guided_filter_fp16_is_refused_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="fast guided filter.*fp16"):
        export(fgf_model(), "onnx", "fp16", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_validation_leaves_nothing(model, tmp_path, monkeypatch):
    exact = dataclasses.replace(formats.get("onnx"), tolerances={"fp32": Tolerance(0.0, 0.0, 0.0, 0.0)})
    monkeypatch.setitem(formats.FORMATS, "onnx", exact)
    with pytest.raises(ValidationError, match="validation failed.*tolerance"):
        export(model, "onnx", "fp32", tmp_path, options=ExportOptions(validation_frames=2, simplify=False))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, precision, options, message", [
    ("tf", "fp16", ExportOptions(), "tf cannot be exported in fp16: it supports fp32"),
    ("coreml", "fp16", ExportOptions(), "coreml fixed-resolution artifacts have the resolution and ratio baked in: "
                                        "pass --resolution"),
    ("torchscript", "fp32", ExportOptions(static=True), "torchscript artifacts keep their shapes dynamic"),
    ("onnx", "fp32", ExportOptions(kind="mlpackage"), "ONNX has one container"),
    ("nonesuch", None, ExportOptions(), "unknown format 'nonesuch'"),
])
def test_refused_requests_leave_no_file(model, tmp_path, fmt, precision, options, message):
    with pytest.raises(UsageError, match=message):
        formats.plan(fmt, precision, options)
    with pytest.raises(UsageError, match=message):
        export(model, fmt, precision, tmp_path / "out", options=options)
    assert list(tmp_path.iterdir()) == []


def test_existing_artifact_is_not_overwritten(model, artifacts):
    before = artifacts["fp32"].read_bytes()
    with pytest.raises(UsageError, match="exists: pass --overwrite"):
        export(model, "onnx", "fp32", artifacts["fp32"].parent)
    assert artifacts["fp32"].read_bytes() == before

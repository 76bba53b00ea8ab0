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
from rvm.formats import ExportOptions
from rvm.media.samples import validation_frames
from rvm.tolerances import Tolerance

from .conftest import CLIPS, OFFICIAL_ONNX, RATIO, fgf_model, max_errors, need, pytorch_outputs

NUMPY_TYPES = {"fp32": np.float32, "fp16": np.float16}


@pytest.fixture(scope="module")
def artifacts(model, store):
    """Each precision from the run's store, validated on a few frames (the tests below run 30)."""
    return {p: store.get(model, "onnx", p, ExportOptions(validation_frames=3)) for p in NUMPY_TYPES}


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


def decoder_block_inputs(graph) -> list:
    """The op types that feed each decoder block's first convolution (`decodeN/conv/conv.0`)."""
    producers = {name: node for node in graph.graph.node for name in node.output}
    return [producers[n.input[0]].op_type for n in graph.graph.node
            if n.op_type == "Conv" and "/conv/conv.0/" in n.name and "decode" in n.name]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_no_convolution_reads_a_concatenation(artifacts, precision):
    """The decoder's and ConvGRUs' convolutions over joined maps are written as sums of convolutions over the parts
    (exporters.onnx.convolutions_split_at_concats), the refiner's too; its box filters, depthwise, stay."""
    graph = onnx.load(str(artifacts[precision]))
    producers = {name: node for node in graph.graph.node for name in node.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    ungrouped = [n for n in convs if all(a.i == 1 for a in n.attribute if a.name == "group")]
    assert not [n.name for n in ungrouped if n.input[0] in producers and producers[n.input[0]].op_type == "Concat"]
    parts = sorted(n.name.rsplit("/", 1)[0] for n in convs if n.name.endswith("_part0"))
    assert len(parts) == 13 and sum("decode" in p and "/conv/conv.0" in p for p in parts) == 4, parts


def test_onnx_runtime_runs_the_split_convolutions_blocked(artifacts, tmp_path):
    """Where ONNX Runtime has its channel-blocked (NCHWc) CPU kernels (x86 with AVX2 or AVX-512; elsewhere it keeps
    NCHW, and this says so by skipping), every part of the decoder blocks' first convolutions runs in them, which
    is what the split is for (the official file's joined convolutions do not)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(artifacts["fp32"]), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    blocked = {n.name for n in optimized.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"}
    if not blocked:
        pytest.skip("this CPU has no ONNX Runtime NCHWc kernels")
    parts = [n.name for n in onnx.load(str(artifacts["fp32"])).graph.node
             if "/conv/conv.0/" in n.name and "decode" in n.name and "_part" in n.name and n.op_type == "Conv"]
    assert len(parts) == 11 and all(any(b.startswith(p) for b in blocked) for p in parts), (parts, sorted(blocked))


def test_split_convolutions_compute_the_same_and_shared_or_grouped_joins_stay():
    """A convolution over a join of three parts (one with channels shape inference cannot see, as in the dynamic
    graph's resized maps) becomes three summed convolutions with the same outputs; a join read twice, and a grouped
    convolution's, are left as they are."""
    from onnx import TensorProto, helper, numpy_helper

    from rvm.exporters.onnx import convolutions_split_at_concats
    rng = np.random.default_rng(0)
    weight = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    nodes = [helper.make_node("Concat", ["ones", "downsample_ratio", "downsample_ratio"], ["scales"], axis=0),
             helper.make_node("Resize", ["src", "roi", "scales"], ["small"], mode="linear"),
             helper.make_node("Conv", ["small", "w_x"], ["x"]),
             helper.make_node("Conv", ["small", "w_f"], ["f_conv"]), helper.make_node("Relu", ["f_conv"], ["f"]),
             helper.make_node("Concat", ["x", "f", "small"], ["joined"], axis=1),
             helper.make_node("Conv", ["joined", "w", "b"], ["y"], name="main", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["x", "small"], ["shared"], axis=1),
             helper.make_node("Conv", ["shared", "w_shared"], ["y_shared"], name="shared"),
             helper.make_node("Relu", ["shared"], ["y_relu"]),
             helper.make_node("Concat", ["x", "x"], ["doubled"], axis=1),
             helper.make_node("Conv", ["doubled", "w_grouped"], ["y_grouped"], name="grouped", group=2)]
    graph = helper.make_model(helper.make_graph(
        nodes, "joins", [helper.make_tensor_value_info("src", TensorProto.FLOAT, [1, 3, "height", "width"]),
                         helper.make_tensor_value_info("downsample_ratio", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
         for name in ("y", "y_shared", "y_relu", "y_grouped")],
        [numpy_helper.from_array(np.ones(2, np.float32), "ones"),
         numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
         weight("w_x", (8, 3, 1, 1)), weight("w_f", (5, 3, 1, 1)), weight("w", (16, 16, 3, 3)), weight("b", (16,)),
         weight("w_shared", (4, 11, 1, 1)), weight("w_grouped", (4, 8, 1, 1))]),
        opset_imports=[helper.make_opsetid("", 12)])
    feeds = {"src": rng.random((1, 3, 12, 14), np.float32), "downsample_ratio": np.array([0.5], np.float32)}
    before = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    split = convolutions_split_at_concats(graph)
    after = ort.InferenceSession(split.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(before, after):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    ops = [(n.op_type, n.name) for n in split.graph.node]
    assert [name for op, name in ops if op == "Conv"][2:] == ["main_part0", "main_part1", "main_part2", "shared",
                                                               "grouped"]
    assert {n.output[0] for n in split.graph.node if n.op_type == "Concat"} == {"scales", "shared", "doubled"}
    assert ("Add", "main_sum2") in ops


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_refiner_box_filters_run_as_one(artifacts, precision):
    """The deep guided filter's four 4-channel box filters (one shared filter) are one 16-channel depthwise
    convolution over their maps joined, split after (exporters.onnx.depthwise_filters_joined)."""
    graph = onnx.load(str(artifacts[precision]))
    boxes = [n for n in graph.graph.node if n.op_type == "Conv" and "/refiner/box_filter" in n.name]
    assert [n.name for n in boxes] == ["/refiner/box_filter/Conv_joined"]
    assert next(a.i for a in boxes[0].attribute if a.name == "group") == 16
    producers = {name: node for node in graph.graph.node for name in node.output}
    assert producers[boxes[0].input[0]].op_type == "Concat" and len(producers[boxes[0].input[0]].input) == 4


def test_joined_depthwise_filters_compute_the_same_and_partial_blocks_stay():
    """Four depthwise convolutions sharing a 4-channel filter (one reading a map made after the others' outputs are
    used) become one over the join with the same outputs, in topological order; two sharing another filter make
    8 channels, less than a block, and stay."""
    from onnx import TensorProto, helper, numpy_helper

    from rvm.exporters.onnx import depthwise_filters_joined
    rng = np.random.default_rng(0)
    weight = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    box = lambda x, w, y: helper.make_node("Conv", [x, w], [y], name=y, group=4, kernel_shape=[3, 3],  # noqa: E731
                                           pads=[1, 1, 1, 1])
    nodes = [box("x", "w", "mx"), box("y", "w", "my"), helper.make_node("Mul", ["mx", "my"], ["mxy"]),
             helper.make_node("Mul", ["x", "y"], ["xy"]), box("xy", "w", "bxy"),
             helper.make_node("Mul", ["x", "x"], ["xx"]), box("xx", "w", "bxx"),
             helper.make_node("Sub", ["bxy", "mxy"], ["cov"]), helper.make_node("Add", ["cov", "bxx"], ["out"]),
             box("x", "v", "vx"), box("y", "v", "vy")]
    graph = helper.make_model(helper.make_graph(
        nodes, "boxes", [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 9, 11]) for name in "xy"],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 9, 11]) for name in ("out", "vx", "vy")],
        [weight("w", (4, 1, 3, 3)), weight("v", (4, 1, 3, 3))]), opset_imports=[helper.make_opsetid("", 12)])
    feeds = {name: rng.standard_normal((1, 4, 9, 11)).astype(np.float32) for name in "xy"}
    before = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    joined = depthwise_filters_joined(graph)
    onnx.checker.check_model(joined)
    after = ort.InferenceSession(joined.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
    convs = {n.name: next(a.i for a in n.attribute if a.name == "group") for n in joined.graph.node
             if n.op_type == "Conv"}
    assert convs == {"mx_joined": 16, "vx": 4, "vy": 4}


# The OBS background-removal plugin (locaal-ai/obs-backgroundremoval, ModelRVM) runs `rvm_mobilenetv3_fp32.onnx` by
# position: inputs src, r1..r4, ratio; outputs from the second on (pha, r1o..r4o) fed back as r1..r4; a fixed
# frame, ratio 1.0 at input 5, zero states preallocated at full size (r_i at 1/2^i of the frame, 16/20/40/64 channels)
OBS_SIZE, OBS_CHANNELS = (320, 192), (16, 20, 40, 64)


def obs_plugin_run(path, frames):
    """The plugin's calls on the ONNX file at `path`: (fgr, pha) per frame."""
    session = cpu_session(path)
    assert [i.name for i in session.get_inputs()] == list(ONNX_INPUTS)  # positions, not names, reach it
    assert [o.name for o in session.get_outputs()] == list(ONNX_OUTPUTS)
    width, height = OBS_SIZE
    states = [np.zeros((1, channels, height >> i, width >> i), np.float32)
              for i, channels in enumerate(OBS_CHANNELS, start=1)]
    outputs = []
    for frame in frames:
        fgr, pha, *fed_back = session.run(None, dict(zip([i.name for i in session.get_inputs()],
                                                         [frame, *states, np.array([1.0], np.float32)])))
        assert [s.shape for s in fed_back] == [s.shape for s in states]  # the plugin's buffers fit every frame
        assert pha.shape == (1, 1, height, width)
        states = fed_back
        outputs.append((fgr, pha))
    return outputs


def test_obs_plugin_call_pattern_runs_our_default_export_as_the_official_file(artifacts):
    """Ratio 1.0 runs the graph's refiner at full size, as the official file does (PyTorch skips it at 1.0): the
    drop-in is judged against the official download under the same calls."""
    frames = [np.ascontiguousarray(f.transpose(2, 0, 1)[None], np.float32) / 255
              for f in validation_frames(6, need(CLIPS / "person_a.mp4"), OBS_SIZE)]
    ours, official = obs_plugin_run(artifacts["fp32"], frames), obs_plugin_run(need(OFFICIAL_ONNX), frames)
    assert np.mean([pha.mean() for _, pha in official]) > 0.05, "the person must be matted"
    assert max(max_errors(ours, [(f.astype(np.float32), p) for f, p in official])) <= \
        formats.get("onnx").tolerance("fp32").pha_max

"""The static ONNX profile: one resolution, the ratio baked, true state shapes, integer Resize sizes, no
shape computation; TensorRT-ready by construction (checked on the graph), an I/O spec beside it, accepted by
the runtime at its own size only, and the refusals that leave nothing written."""
import json

import numpy as np
import onnx
import pytest

from rvm import formats
from rvm.commands.cli import main as rvm_main
from rvm.errors import UsageError
from rvm.exporters.onnx import inferred_shapes, trace_to_onnx, without_identity_slices
from rvm.exporters.tensorrt_check import tensorrt_problems
from rvm.formats import ExportOptions
from rvm.iospec import spec_path, state_shapes
from rvm.media.samples import validation_frames
from rvm.runtimes import load
from rvm.runtimes.pytorch import PyTorchRuntime

from .artifact_helpers import (
    FRAMES,
    STATIC_RATIO,
    STATIC_SIZE,
    assert_refuses_other_sizes,
    assert_state_round_trips,
    compare_and_reject_a_lost_state,
)
from .conftest import OFFICIAL_ONNX, need

WIDTH, HEIGHT = STATIC_SIZE


@pytest.fixture(scope="module")
def static_onnx(model, store):
    options = ExportOptions(static=True, resolution=STATIC_SIZE, downsample_ratio=STATIC_RATIO, validation_frames=3)
    return store.get(model, "onnx", "fp32", options)


@pytest.fixture(scope="module")
def clip():
    return validation_frames(FRAMES)


def true_states():
    return [list(s) for s in state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO)]


def test_graph_is_static_and_tensorrt_ready(static_onnx):
    assert static_onnx.name == f"rvm_mobilenetv3_fp32_{WIDTH}x{HEIGHT}_s0.5.onnx"
    graph = onnx.load(str(static_onnx))
    assert tensorrt_problems(graph) == []
    assert [i.name for i in graph.graph.input] == ["src", "r1i", "r2i", "r3i", "r4i"]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(graph.graph.input) + list(graph.graph.output)}
    assert [shapes[f"r{i}i"] for i in range(1, 5)] == true_states() == [shapes[f"r{i}o"] for i in range(1, 5)]
    assert shapes["src"] == [1, 3, HEIGHT, WIDTH] and shapes["pha"] == [1, 1, HEIGHT, WIDTH]
    resizes = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert resizes and all(len(n.input) == 4 and n.input[3] for n in resizes)
    assert not {"Shape", "Gather", "ConstantOfShape"} & {n.op_type for n in graph.graph.node}
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(metadata["static"]) is True and float(metadata["downsample_ratio"]) == STATIC_RATIO


def test_static_fp16_is_tensorrt_ready_and_within_its_bounds(model, store, clip):
    """What TensorRT and GPU users ask for: the fp16 converter's casts of constant Resize scales are folded, so the
    static fp16 graph passes its own TensorRT check (it failed it: "input 2 is computed at run time")."""
    options = ExportOptions(static=True, resolution=STATIC_SIZE, downsample_ratio=STATIC_RATIO, validation_frames=2)
    path = store.get(model, "onnx", "fp16", options)
    graph = onnx.load(str(path))
    assert tensorrt_problems(graph) == []
    constants = {i.name for i in graph.graph.initializer} | {n.output[0] for n in graph.graph.node
                                                               if n.op_type == "Constant"}
    assert not [n.name for n in graph.graph.node if n.op_type == "Cast" and n.input[0] in constants]
    with load(path, device="cpu") as runtime:
        compare_and_reject_a_lost_state(model, runtime, clip[:8], "onnx", "fp16")


def test_no_slice_copies_a_whole_map(static_onnx):
    graph = onnx.load(str(static_onnx))
    shapes = inferred_shapes(graph)
    slices = [n for n in graph.graph.node if n.op_type == "Slice"]
    assert slices and all(shapes[n.input[0]] != shapes[n.output[0]] for n in slices)  # the real crops stay


def test_identity_slices_dropped_and_nothing_else():
    """Of a slice keeping all of its input, one cropping a row and one reversing the rows (the same shape, other
    values), only the first is dropped, and its reader reads the input."""
    from onnx import TensorProto, helper, numpy_helper
    constant = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Slice", ["x", "zero", "four", "axis"], ["whole"]),
             helper.make_node("Slice", ["whole", "zero", "three", "axis"], ["crop"]),
             helper.make_node("Slice", ["x", "last", "before_first", "axis", "back"], ["reversed"]),
             helper.make_node("Add", ["crop", "crop"], ["y"]), helper.make_node("Add", ["reversed", "x"], ["z"])]
    graph = helper.make_model(helper.make_graph(
        nodes, "slices", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 5])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "z")],
        [constant("zero", [0]), constant("four", [4]), constant("three", [3]), constant("axis", [2]),
         constant("last", [-1]), constant("before_first", [-5]), constant("back", [-1])]),
        opset_imports=[helper.make_opsetid("", 12)])
    pruned = without_identity_slices(graph)
    assert [n.output[0] for n in pruned.graph.node if n.op_type == "Slice"] == ["crop", "reversed"]
    assert next(n for n in pruned.graph.node if n.output[0] == "crop").input[0] == "x"


def test_checker_rejects_dynamic_graphs(model):
    """The check can fail: our dynamic graph and the official download both carry what TensorRT refuses."""
    for graph in (trace_to_onnx(model), onnx.load(str(need(OFFICIAL_ONNX)))):
        problems = "\n".join(tensorrt_problems(graph))
        assert "dynamic or unknown shape" in problems and "float scales instead of integer sizes" in problems
        assert "Shape" in problems or "computed at run time" in problems


def test_io_spec_says_what_to_feed(static_onnx):
    spec = json.loads(spec_path(static_onnx).read_text())
    assert spec_path(static_onnx).name == static_onnx.name + ".iospec.json"
    assert spec["resolution"] == [WIDTH, HEIGHT] and spec["downsample_ratio"] == STATIC_RATIO
    inputs = {i["name"]: i for i in spec["inputs"]}
    assert inputs["src"]["shape"] == [1, 3, HEIGHT, WIDTH] and inputs["src"]["color"] == "RGB"
    assert inputs["src"]["range"] == [0.0, 1.0] and inputs["src"]["layout"] == "NCHW"
    assert [inputs[f"r{i}i"]["shape"] for i in range(1, 5)] == true_states()
    assert all(inputs[f"r{i}i"]["initial"] == "zeros" for i in range(1, 5))


def test_runtime_matches_pytorch_keeps_its_state_and_refuses_other_sizes(static_onnx, model, clip):
    runtime = load(static_onnx, device="cpu")
    assert runtime.info.fixed_resolution == STATIC_SIZE and runtime.info.baked_downsample_ratio == STATIC_RATIO
    compare_and_reject_a_lost_state(model, runtime, clip, "onnx", "fp32")
    assert_refuses_other_sizes(runtime)
    assert_state_round_trips(runtime, clip[:3], shapes=true_states())


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx", "--static"], "have the resolution and ratio baked in: pass --resolution"),
    (["--format", "onnx", "--static", "--resolution", "320x180"], "have the resolution and ratio baked in"),
    (["--format", "torchscript", "--static", "--resolution", "320x180", "--downsample-ratio", "0.5"],
     "torchscript artifacts keep their shapes dynamic"),
    (["--format", "tf", "--precision", "int8"], "tf cannot be exported in int8"),
    (["--format", "onnx", "--precision", "int8"], "int8 needs calibration frames: pass --calibration"),
    (["--format", "openvino", "--precision", "int8"], "int8 needs calibration frames: pass --calibration"),
    (["--format", "onnx", "--calibration", "x.mp4"], "--calibration applies to int8 exports only"),
    (["--format", "onnx", "--precision", "int8", "--calibration", "nonesuch.mp4"],
     "calibration source nonesuch.mp4 does not exist"),
])
def test_bad_requests_are_one_line_errors_writing_nothing(argv, message, tmp_path, capsys):
    assert rvm_main(["export", *argv, "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_calibration_source_without_frames_is_refused(tmp_path):
    empty = tmp_path / "frames"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError, match=f"calibration source {empty} has no frames"):
        formats.plan("onnx", "int8", ExportOptions(calibration=str(empty)))


def test_all_leaves_out_int8_without_calibration():
    jobs = formats.plan("all", "int8", ExportOptions())
    assert {job.format.name for job in jobs}.isdisjoint({"onnx", "openvino"})


@pytest.mark.gpu
def test_tensorrt_engine_builds_and_matches(static_onnx, model, clip):
    """Where TensorRT and CUDA exist: build an engine from the static graph and compare it through ORT's
    TensorRT provider (a parity row for the static graph on TensorRT)."""
    import onnxruntime as ort
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no TensorRT execution provider here (needs onnxruntime-gpu with TensorRT and a CUDA GPU)")
    session = ort.InferenceSession(str(static_onnx), providers=["TensorrtExecutionProvider"])
    assert session.get_providers()[0] == "TensorrtExecutionProvider"
    states = [np.zeros(i.shape, np.float32) for i in session.get_inputs()[1:]]
    reference = PyTorchRuntime(model, device="cpu")
    for frame in clip:
        src = np.ascontiguousarray(frame.transpose(2, 0, 1)[None], np.float32) / 255
        fgr, pha, *states = session.run(None, dict(zip(["src", "r1i", "r2i", "r3i", "r4i"], [src, *states])))
        expected = reference.step(src, STATIC_RATIO)
        assert np.abs(pha - expected["pha"]).max() <= 1e-2  # TensorRT may pick TF32/fused kernels


def test_recurrent_blocks_stay_in_onnx_runtimes_blocked_layout(static_onnx, tmp_path):
    """decode1's output and the ConvGRU gates whose halves are whole 16-channel blocks are computed apart (no Split
    of them left), their `1 - z` is a HardSigmoid, and the 16- and 64-channel states are read through an identity
    MaxPool; decode2's and decode3's 20- and 40-channel halves keep their Split. Where ONNX Runtime has its
    blocked (NCHWc) CPU kernels (elsewhere this says so by skipping), decode0's upsampling then runs blocked:
    the point of the rewrites."""
    import onnxruntime as ort
    graph = onnx.load(str(static_onnx))
    splits = sorted(n.name for n in graph.graph.node if n.op_type == "Split" and "decode" in n.name)
    assert splits == ["/model/decoder/decode2/Split", "/model/decoder/decode2/gru/Split",
                      "/model/decoder/decode3/Split", "/model/decoder/decode3/gru/Split",
                      "/model/decoder/decode4/Split"], splits
    gates = [n for n in graph.graph.node if n.name.endswith("/gru/Sub")]
    assert sorted((n.name.split("/")[3], n.op_type) for n in gates) == [
        ("decode1", "HardSigmoid"), ("decode2", "Sub"), ("decode3", "Sub"), ("decode4", "HardSigmoid")]
    pools = {n.input[0]: n.output[0] for n in graph.graph.node if n.op_type == "MaxPool"}
    assert pools == {"r1i": "r1i_blocked", "r4i": "r4i_blocked"}
    assert not [n.name for n in graph.graph.node if {"r1i", "r4i"} & set(n.input) and n.op_type != "MaxPool"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(static_onnx), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    if not any(n.domain == "com.microsoft.nchwc" for n in optimized.graph.node):
        pytest.skip("this CPU has no ONNX Runtime NCHWc kernels")
    upsampled = [n.name for n in optimized.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Upsample"]
    assert any("decode0/Resize" in name for name in upsampled), upsampled


def test_blocked_rewrites_compute_the_same_and_leave_what_they_cannot_keep_blocked():
    """On a small ConvGRU-like graph: the split of a 32-channel activated sum of two convolutions becomes one sum
    per 16-channel piece, `1 - sigmoid` a HardSigmoid, the 16-channel state is read through a MaxPool; the split
    into 20-channel halves, `1 - relu` and the 20-channel state stay. Outputs equal the original's."""
    from onnx import TensorProto, helper, numpy_helper

    from rvm.exporters.onnx import blocked_recurrent_blocks
    rng = np.random.default_rng(0)
    weight = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w_x", "bias"], ["cx"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w_h"], ["ch"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["cx", "ch"], ["sum"]), helper.make_node("Sigmoid", ["sum"], ["gates"]),
             helper.make_node("Split", ["gates"], ["r", "z"], name="blocked", axis=1, split=[16, 16]),
             helper.make_node("Sub", ["one", "z"], ["one_minus_z"], name="gate"),
             helper.make_node("Mul", ["r", "h"], ["rh"]), helper.make_node("Mul", ["one_minus_z", "h"], ["y"]),
             helper.make_node("Conv", ["g", "w_g"], ["cg"]), helper.make_node("Relu", ["cg"], ["relu"]),
             helper.make_node("Split", ["relu"], ["a", "b"], name="padded", axis=1, split=[20, 20]),
             helper.make_node("Sub", ["one", "a"], ["one_minus_a"], name="not_a_gate"),
             helper.make_node("Mul", ["b", "g"], ["bg"])]
    graph = helper.make_model(helper.make_graph(
        nodes, "gru", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 7]),
                       helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 16, 6, 7]),
                       helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 20, 6, 7])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, 6, 7])
         for name, channels in (("rh", 16), ("y", 16), ("one_minus_a", 20), ("bg", 20))],
        [weight("w_x", (32, 8, 3, 3)), weight("bias", (32,)), weight("w_h", (32, 16, 3, 3)),
         weight("w_g", (40, 20, 1, 1)), numpy_helper.from_array(np.array(1, np.float32), "one")]),
        opset_imports=[helper.make_opsetid("", 12)])
    feeds = {name: rng.standard_normal(shape).astype(np.float32)
             for name, shape in (("x", (1, 8, 6, 7)), ("h", (1, 16, 6, 7)), ("g", (1, 20, 6, 7)))}
    before = onnx_outputs(graph, feeds)
    rewritten = blocked_recurrent_blocks(graph)
    onnx.checker.check_model(rewritten)
    for a, b in zip(before, onnx_outputs(rewritten, feeds)):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6
    ops = {n.name or n.output[0]: n.op_type for n in rewritten.graph.node}
    assert "blocked" not in ops and ops["padded"] == "Split"
    assert ops["gate"] == "HardSigmoid" and ops["not_a_gate"] == "Sub"
    assert sorted(n.input[0] for n in rewritten.graph.node if n.op_type == "MaxPool") == ["h"]
    assert sum(op == "Conv" for op in ops.values()) == 5


def onnx_outputs(graph, feeds):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)

"""TFLite: static export from our TF graph, builtin ops only, GPU-delegate readiness, every precision against
PyTorch within its registered bounds (and full-integer int8's bounds rejecting the state zeroed every frame), the
metadata inside the flatbuffer, and the refusals. The 58-frame rows are the parity suite's (parity_tests/)."""
import json

import pytest

pytest.importorskip("tensorflow", reason="TensorFlow is not installed: pip install 'rvm-toolkit[tflite]'")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: pip install 'rvm-toolkit[tflite]'")

from rvm import formats  # noqa: E402
from rvm.compare import compare  # noqa: E402
from rvm.errors import MissingDependency, UsageError  # noqa: E402
from rvm.exporters import export  # noqa: E402
from rvm.exporters.tflite import convert, crop_for_exact_resize, gpu_incompatible_ops, op_names  # noqa: E402
from rvm.formats import ExportOptions  # noqa: E402
from rvm.iospec import spec_path, state_shapes  # noqa: E402
from rvm.runtimes import load  # noqa: E402
from rvm.runtimes.pytorch import PyTorchRuntime  # noqa: E402
from rvm.runtimes.tflite import TFLiteRuntime  # noqa: E402

from .artifact_helpers import (  # noqa: E402
    STATIC,
    STATIC_RATIO,
    STATIC_SIZE,
    StateZeroedEveryFrame,
    assert_refuses_other_sizes,
    assert_state_round_trips,
    export_each_precision,
    failures,
)

PRECISIONS = formats.get("tflite").precisions


@pytest.fixture(scope="module")
def artifacts(model, store):
    return export_each_precision(model, "tflite", store)


@pytest.fixture(scope="module")
def comparisons(model, artifacts, stateless_clip):
    results = {}
    for precision, path in artifacts.items():
        with load(path, device="cpu") as runtime:
            results[precision] = compare(PyTorchRuntime(model, device="cpu"), runtime, stateless_clip, STATIC_RATIO)
    return results


@pytest.mark.parametrize("precision", PRECISIONS)
def test_within_registered_tolerance(comparisons, precision):
    result = comparisons[precision]
    assert failures(result, "tflite", precision) == [], (result.pha_max, result.pha_mean, result.fgr_mean)


def test_fp32_within_1e4_of_pytorch(comparisons):
    assert comparisons["fp32"].pha_max <= 1e-4 and comparisons["fp32"].fgr_max <= 1e-4


@pytest.mark.parametrize("kernels", ("builtin", "reference"))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_other_kernel_paths_within_tolerance(model, artifacts, stateless_clip, kernels, precision):
    """LiteRT's own kernels without XNNPACK, and its reference kernels, hold the same bounds (8 frames)."""
    with TFLiteRuntime(artifacts[precision], kernels=kernels) as runtime:
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, stateless_clip[:8], STATIC_RATIO)
    assert failures(result, "tflite", precision) == [], (kernels, result.pha_max, result.pha_mean, result.fgr_mean)


def test_int8_bounds_reject_a_lost_state(model, artifacts, stateless_clip):
    """Full-integer int8 keeps little of the state: its mean bound is the one with the thinnest margin."""
    with load(artifacts["int8"], device="cpu") as runtime:
        broken = compare(PyTorchRuntime(model, device="cpu"), StateZeroedEveryFrame(runtime), stateless_clip,
                         STATIC_RATIO)
    assert failures(broken, "tflite", "int8"), (broken.pha_mean, broken.fgr_mean)


@pytest.mark.parametrize("precision", ("fp32", "fp16"))
def test_gpu_delegate_takes_every_op(artifacts, precision):
    assert gpu_incompatible_ops(artifacts[precision].read_bytes()) == []


def test_gpu_check_flags_ops_the_delegate_lacks():
    """The check can fail: a Flex op and TOPK_V2 (both called compatible by TF 2.19's analyzer) are flagged."""
    import tensorflow as tf
    function = tf.function(lambda x: tf.math.top_k(tf.cosh(x), 3).values,
                           input_signature=[tf.TensorSpec([1, 8], tf.float32)]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    content = converter.convert()
    found = " ".join(gpu_incompatible_ops(content))
    assert "FlexCosh" in found and "TOPK_V2" in found


def test_builtin_ops_only(artifacts):
    for precision, path in artifacts.items():
        names = op_names(path.read_bytes())
        assert names and not [n for n in names if "FLEX" in n.upper() or n == "CUSTOM"], (precision, set(names))
        assert "GATHER" not in names and "BROADCAST_TO" not in names, (precision, set(names))


def test_gather_downsample_only_where_resize_is_inexact(model):
    """183 rows at ratio 0.4 have no exact ResizeBilinear form (73 / 0.4 = 182.5): the Gather form stays there."""
    assert crop_for_exact_resize(183, 0.4) is None and crop_for_exact_resize(184, 0.5) == 184
    content = convert(model, "fp32", ExportOptions(resolution=(64, 183), downsample_ratio=0.4, static=True))
    assert "GATHER" in op_names(content)


def test_metadata_inside_and_io_spec_beside(artifacts):
    path = artifacts["fp32"]
    assert path.name == "rvm_mobilenetv3_fp32_324x184_s0.5.tflite" and formats.detect(path).name == "tflite"
    spec = json.loads(spec_path(path).read_text())
    assert spec["format"] == "tflite" and spec["resolution"] == list(STATIC_SIZE)
    assert spec["downsample_ratio"] == STATIC_RATIO
    assert [i["name"] for i in spec["inputs"]] == ["src", "r1i", "r2i", "r3i", "r4i"]
    assert spec["inputs"][0]["shape"] == [1, STATIC_SIZE[1], STATIC_SIZE[0], 3]  # NHWC
    assert [i["shape"] for i in spec["inputs"][1:]] == [
        list(s) for s in state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO, layout="NHWC")]
    assert all(i["dtype"] == "float32" for i in spec["inputs"] + spec["outputs"])
    with load(artifacts["int8"], device="cpu") as runtime:  # full integer inside, float at the boundary
        metadata = runtime.info.metadata
        assert metadata.precision == "int8" and metadata.resolution == STATIC_SIZE
        assert metadata.downsample_ratio == STATIC_RATIO and "tensorflow" in metadata.versions


def test_state_round_trips_and_other_sizes_refused(artifacts, stateless_clip):
    with load(artifacts["fp16"], device="cpu") as runtime:
        assert runtime.info.baked_downsample_ratio == STATIC_RATIO
        assert_state_round_trips(runtime, stateless_clip[:2],
                                 shapes=state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO))
        assert_refuses_other_sizes(runtime)


def test_model_without_our_metadata_refused(tmp_path):
    import tensorflow as tf
    function = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    path = tmp_path / "other.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()]).convert())
    with pytest.raises(UsageError, match="no rvm-toolkit metadata") as error:
        TFLiteRuntime(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options,message", [
    (ExportOptions(), "--resolution"),  # a dynamic request for a static-only format
    (ExportOptions(**STATIC), "--calibration"),  # full integer without calibration frames
])
def test_refused_before_any_work(model, tmp_path, options, message):
    with pytest.raises(UsageError, match=message) as error:
        export(model, "tflite", "int8", tmp_path / "out", options=options)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def test_missing_extra_named(monkeypatch, model, tmp_path):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else find_spec(name, *a))
    with pytest.raises(MissingDependency, match=r"ai_edge_litert.*rvm-toolkit\[tflite\]"):
        export(model, "tflite", "fp32", tmp_path / "out", options=ExportOptions(**STATIC))
    assert not (tmp_path / "out").exists()


def test_format_all_writes_mobile_formats_for_a_given_size_only():
    planned = {(job.format.name, job.precision) for job in formats.plan("all", options=ExportOptions(**STATIC))}
    assert {("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8-dynamic"), ("ncnn", "fp32")} <= planned
    assert ("tflite", "int8") not in planned and ("tensorrt", "fp16") not in planned  # calibration; a GPU
    unsized = {job.format.name for job in formats.plan("all")}
    assert not {"tflite", "ncnn", "tensorrt"} & unsized

"""TF SavedModel export from the real weights: reloaded with plain TensorFlow as client code calls it
(Keras-style list call, `tf.constant(0.)` states, the serving signature) and through TensorflowRuntime,
compared with PyTorch over recurrent frames of real footage."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow")

from rvm import formats  # noqa: E402
from rvm.compare import compare  # noqa: E402
from rvm.errors import UsageError  # noqa: E402
from rvm.exporters import ExportOptions, export  # noqa: E402
from rvm.media.video import read_frames  # noqa: E402
from rvm.model import MattingNetwork  # noqa: E402
from rvm.runtimes import load  # noqa: E402
from rvm.runtimes.pytorch import PyTorchRuntime  # noqa: E402
from rvm.runtimes.tensorflow import TensorflowRuntime  # noqa: E402

from .conftest import CLIPS, DGF_WEIGHTS, FGF_WEIGHTS, need  # noqa: E402

DGF_TOLERANCE = 1e-4  # measured 1.2e-5 over 30 frames of person_a
# float32 rounding amplified by eps 1e-5
FGF_TOLERANCE = formats.get("tf").tolerance("fp32", "fast_guided_filter").pha_max


def real_model(weights, refiner) -> MattingNetwork:
    model = MattingNetwork("mobilenetv3", refiner)
    model.load_state_dict(torch.load(need(weights)), strict=False)  # no segmentation head in these weights
    return model.eval()


def clip_frames(name: str, count: int, size=None) -> list:
    """float32 NHWC [1,H,W,3] frames in 0..1."""
    return [f[None].astype(np.float32) / 255 for f in read_frames(need(CLIPS / name), count, size)]


def torch_outputs(model, frames, ratio):
    """PyTorch fgr/pha per frame (NHWC) with the state carried through."""
    rec, outputs = [None] * 4, []
    with torch.inference_mode():
        for frame in frames:
            fgr, pha, *rec = model(torch.from_numpy(frame.transpose(0, 3, 1, 2).copy()), *rec, downsample_ratio=ratio)
            outputs.append((fgr.numpy().transpose(0, 2, 3, 1), pha.numpy().transpose(0, 2, 3, 1)))
    return outputs


def keras_style_outputs(saved, frames, ratio):
    """As client code calls it: `saved([src, *rec, ratio])`, states starting as `tf.constant(0.)`."""
    rec, outputs = [tf.constant(0.0)] * 4, []
    for frame in frames:
        out = saved([tf.constant(frame), *rec, tf.constant(ratio)])
        rec = [out["r1o"], out["r2o"], out["r3o"], out["r4o"]]
        outputs.append((out["fgr"].numpy(), out["pha"].numpy()))
    return outputs


def max_error(a, b) -> float:
    return max(float(np.abs(x - y).max()) for pair_a, pair_b in zip(a, b) for x, y in zip(pair_a, pair_b))


@pytest.fixture(scope="module")
def dgf_model():
    return real_model(DGF_WEIGHTS, "deep_guided_filter")


@pytest.fixture(scope="module")
def dgf_export(dgf_model, store):
    """From the run's store (exported once per run), validated."""
    return store.get(dgf_model, "tf", "fp32")


@pytest.fixture(scope="module")
def dgf_saved(dgf_export):
    return tf.saved_model.load(str(dgf_export))


def test_artifact_is_named_and_described(dgf_export):
    assert dgf_export.name == "rvm_mobilenetv3_tf"
    assert formats.detect(dgf_export).name == "tf"
    meta = json.loads((dgf_export / "rvm_metadata.json").read_text())
    assert (meta["format"], meta["variant"], meta["refiner"], meta["precision"]) == \
        ("tf", "mobilenetv3", "deep_guided_filter", "fp32")
    assert meta["tensorflow_version"] == tf.__version__
    assert not [p for p in dgf_export.parent.iterdir() if p.name.startswith(".tmp-")]


def test_plain_tf_matches_pytorch_over_30_recurrent_frames(dgf_model, dgf_saved):
    frames = clip_frames("person_a.mp4", 30)
    error = max_error(keras_style_outputs(dgf_saved, frames, 0.25), torch_outputs(dgf_model, frames, 0.25))
    assert error < DGF_TOLERANCE


def test_serving_signature_takes_named_inputs(dgf_saved):
    signature = dgf_saved.signatures["serving_default"]
    assert set(signature.structured_outputs) == {"fgr", "pha", "r1o", "r2o", "r3o", "r4o"}
    frame = tf.constant(clip_frames("person_a.mp4", 1)[0])
    zero = tf.constant(0.0)
    served = signature(src=frame, r1i=zero, r2i=zero, r3i=zero, r4i=zero, downsample_ratio=tf.constant(0.25))
    called = dgf_saved([frame, zero, zero, zero, zero, tf.constant(0.25)])
    # TensorflowRuntime falls back to the signature for SavedModels that are not callable
    fallback = TensorflowRuntime._serving(dgf_saved)([frame, zero, zero, zero, zero, tf.constant(0.25)])
    for name in ("fgr", "pha", "r1o", "r4o"):
        np.testing.assert_array_equal(served[name].numpy(), called[name].numpy())
        np.testing.assert_array_equal(fallback[name].numpy(), called[name].numpy())
    assert served["fgr"].shape == (1, 92, 162, 3) and served["pha"].shape == (1, 92, 162, 1)


def test_scalar_zero_state_equals_full_zero_state(dgf_saved):
    frame = tf.constant(clip_frames("person_a.mp4", 1)[0])
    ratio = tf.constant(0.25)
    scalar = dgf_saved([frame, *[tf.constant(0.0)] * 4, ratio])
    full = dgf_saved([frame, *[tf.zeros_like(scalar[name]) for name in ("r1o", "r2o", "r3o", "r4o")], ratio])
    np.testing.assert_array_equal(scalar["pha"].numpy(), full["pha"].numpy())


def test_ratio_is_a_runtime_input(dgf_model, dgf_saved):
    frame = clip_frames("person_a.mp4", 1)
    for ratio in (0.5, 0.4):
        out = keras_style_outputs(dgf_saved, frame, ratio)
        assert max_error(out, torch_outputs(dgf_model, frame, ratio)) < DGF_TOLERANCE
    first = dgf_saved([tf.constant(frame[0]), *[tf.constant(0.0)] * 4, tf.constant(0.5)])
    second = dgf_saved([tf.constant(frame[0]), *[tf.constant(0.0)] * 4, tf.constant(0.25)])
    # r1 lives at half the downsampled size: ceil(floor(92 * ratio) / 2) rows
    assert first["r1o"].shape[1:3] == (23, 41) and second["r1o"].shape[1:3] == (12, 20)


def test_runtime_on_odd_sizes_with_nchw_states(dgf_model, dgf_export):
    """person_narrow (52x92) at 0.37: 19x34 downsampled, odd sizes through every pooling and crop."""
    frames = read_frames(need(CLIPS / "person_narrow.mp4"), 6)
    with load(dgf_export, device="cpu") as runtime:
        assert runtime.backend == "tf" and runtime.info.metadata.refiner == "deep_guided_filter"
        result = compare(PyTorchRuntime(dgf_model, device="cpu"), runtime, frames, 0.37)
        assert result.pha_max < DGF_TOLERANCE and result.fgr_max < DGF_TOLERANCE
        reference = PyTorchRuntime(dgf_model, device="cpu")
        reference.step(frames[0], 0.37)
        runtime.reset()
        runtime.step(frames[0], 0.37)
        assert [s.shape for s in runtime.state] == [s.shape for s in reference.state]  # NCHW
        runtime.state = reference.state  # a restored NCHW state continues the stream
        np.testing.assert_allclose(runtime.step(frames[1], 0.37)["pha"], reference.step(frames[1], 0.37)["pha"],
                                   atol=DGF_TOLERANCE)


def test_fast_guided_filter_weights(tmp_path):
    model = real_model(FGF_WEIGHTS, "fast_guided_filter")
    path = export(model, "tf", "fp32", tmp_path, options=ExportOptions(validation_frames=4))
    frames = clip_frames("person_a.mp4", 15)
    saved = tf.saved_model.load(str(path))
    error = max_error(keras_style_outputs(saved, frames, 0.25), torch_outputs(model, frames, 0.25))
    assert error < FGF_TOLERANCE


def test_resnet50_random_weights_tiny(tmp_path):
    need(CLIPS / "person_a.mp4")  # skip before exporting, not fail after, where ../shared is absent
    torch.manual_seed(0)
    model = MattingNetwork("resnet50", "deep_guided_filter").eval()
    options = ExportOptions(resolution=(64, 36), validation_frames=3)  # validation frames resized to 64x36
    path = export(model, "tf", "fp32", tmp_path, options=options)
    assert path.name == "rvm_resnet50_tf"
    frames = clip_frames("person_a.mp4", 3, (64, 36))
    error = max_error(keras_style_outputs(tf.saved_model.load(str(path)), frames, 0.5),
                      torch_outputs(model, frames, 0.5))
    assert error < DGF_TOLERANCE


def test_tf2onnx_converts_at_opset_12(dgf_export, dgf_saved, tmp_path):
    """Cross-check that the graph holds only standard ops: tf2onnx converts it and ONNX Runtime agrees."""
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "from_tf.onnx"
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(dgf_export), "--opset", "12",
                    "--output", str(onnx_path)], check=True, capture_output=True)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    frame = clip_frames("person_a.mp4", 1)[0]
    zero = np.zeros((), np.float32)
    fgr, pha = session.run(["fgr", "pha"], {"src": frame, "r1i": zero, "r2i": zero, "r3i": zero, "r4i": zero,
                                            "downsample_ratio": np.array(0.25, np.float32)})
    expected = dgf_saved([tf.constant(frame), *[tf.constant(0.0)] * 4, tf.constant(0.25)])
    assert np.abs(pha - expected["pha"].numpy()).max() < DGF_TOLERANCE
    assert np.abs(fgr - expected["fgr"].numpy()).max() < DGF_TOLERANCE


def test_refusals_leave_nothing(dgf_model, dgf_export, tmp_path):
    with pytest.raises(UsageError, match="supports fp32"):
        export(dgf_model, "tf", "fp16", tmp_path)
    with pytest.raises(UsageError, match="overwrite"):
        export(dgf_model, "tf", "fp32", dgf_export.parent)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="not a TF SavedModel"):
        formats.get("tf").entry_point("runtime").from_path(tmp_path)
    with pytest.raises(UsageError, match="is a folder but no artifact of a known format"):
        load(tmp_path)

"""OnnxRuntime: the official download through `Runtime.load`, io-bound states, resolution changes, fp16
artifacts, session options. CUDA is not tested here: this CPU onnxruntime has no CUDA provider."""
import numpy as np
import onnxruntime as ort
import pytest

from rvm import formats
from rvm.compare import compare
from rvm.exporters import ExportOptions
from rvm.runtimes import BackendUnavailable, ResolutionChangedError, Runtime
from rvm.runtimes.onnxruntime import OnnxRuntime
from rvm.runtimes.pytorch import PyTorchRuntime

from .conftest import CLIPS, OFFICIAL_ONNX, clip_frames, need


@pytest.fixture(scope="module")
def frames():
    return clip_frames(count=10)


@pytest.fixture(scope="module")
def official():
    return need(OFFICIAL_ONNX)


def test_official_download_steps_like_pytorch(official, model, frames):
    runtime = Runtime.load(official, device="cpu")
    assert isinstance(runtime, OnnxRuntime)
    assert (runtime.info.backend, runtime.info.device, runtime.info.precision) == ("onnx", "cpu", "fp32")
    assert runtime.info.metadata is None  # the official file carries none: defaults apply
    images = [(f[0].transpose(1, 2, 0) * 255).round().astype(np.uint8) for f in frames]
    for ratio in (0.25, 0.5):
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, images, ratio)
        assert result.pha_max <= 1e-4 and result.fgr_max <= 1e-4, (ratio, result)
    out = runtime.step(images[0])  # uint8 HWC in, uint8 HWC out, ratio 'auto'
    assert out["pha"].shape == (184, 324, 1) and out["pha"].dtype == np.uint8


def test_state_round_trip_continues_the_stream(official, frames):
    runtime = Runtime.load(official, device="cpu", downsample_ratio=0.5)
    for frame in frames[:3]:
        runtime.run_nchw(frame)
    saved = runtime.state
    assert [s.shape for s in saved] == [(1, 16, 46, 81), (1, 20, 23, 41), (1, 40, 12, 21), (1, 64, 6, 11)]
    expected = runtime.run_nchw(frames[3])[1]
    runtime.state = saved
    assert np.array_equal(runtime.run_nchw(frames[3])[1], expected)


def test_outputs_of_earlier_frames_are_not_overwritten(official, frames):
    """fgr/pha are written by ORT straight into arrays the runtime hands out: each frame must get new ones,
    since a pipeline still composites frame t while frame t+1 runs."""
    runtime = Runtime.load(official, device="cpu", downsample_ratio=0.5)
    first_fgr, first_pha = runtime.run_nchw(frames[0])
    kept = first_fgr.copy(), first_pha.copy()
    second_fgr, second_pha = runtime.run_nchw(frames[5])
    assert not np.shares_memory(first_pha, second_pha) and not np.shares_memory(first_fgr, second_fgr)
    assert np.array_equal(first_fgr, kept[0]) and np.array_equal(first_pha, kept[1])
    assert not np.array_equal(first_pha, second_pha)
    assert first_fgr.shape == (1, 3, *frames[0].shape[2:]) and first_pha.dtype == np.float32


def test_state_from_another_resolution(official, frames):
    narrow = clip_frames("person_narrow.mp4", count=2)
    raising = Runtime.load(official, device="cpu", downsample_ratio=0.5, on_resolution_change="raise")
    raising.run_nchw(frames[0])
    with pytest.raises(ResolutionChangedError, match="call reset"):
        raising.run_nchw(narrow[0])
    raising.reset()
    assert raising.run_nchw(narrow[0])[1].shape == narrow[0][:, :1].shape

    resetting = Runtime.load(official, device="cpu", downsample_ratio=0.5)
    resetting.run_nchw(frames[0])
    fresh = Runtime.load(official, device="cpu", downsample_ratio=0.5).run_nchw(narrow[0])[1]
    assert np.array_equal(resetting.run_nchw(narrow[0])[1], fresh)  # restarted from zero state

    resetting.state = raising.state  # a narrow stream's state restored before a wide frame
    with pytest.raises(ResolutionChangedError, match="belongs to another resolution"):
        resetting.run_nchw(frames[1])


def test_fp16_artifact_takes_fp16_and_reports_fp32(model, store, frames):
    path = store.get(model, "onnx", "fp16", ExportOptions(validate=False))
    runtime = Runtime.load(path, device="cpu", downsample_ratio=0.4)  # 0.4 is not exact in fp16: kept fp32
    assert runtime.info.precision == "fp16" and runtime.info.metadata.precision == "fp16"
    fgr, pha = runtime.run_nchw(frames[0])
    assert fgr.dtype == pha.dtype == np.float32 and pha.shape == (1, 1, 184, 324)
    assert all(s.dtype == np.float32 for s in runtime.state)
    assert runtime.state[0].shape == (1, 16, 37, 65)  # floor(184 * 0.4) = 73 -> 37; floor(324 * 0.4) = 129 -> 65


def test_session_options(official):
    runtime = OnnxRuntime.from_path(official, device="cpu", graph_optimization="basic", intra_op_threads=1)
    assert runtime.session.get_session_options().intra_op_num_threads == 1
    assert runtime.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(ValueError, match="graph_optimization must be one of"):
        OnnxRuntime.from_path(official, device="cpu", graph_optimization="max")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_cuda_without_provider_says_so(official):
    with pytest.raises(BackendUnavailable, match="no CUDA provider.*onnxruntime-gpu"):
        Runtime.load(official, device="cuda")
    assert Runtime.load(official).info.device == "cpu"  # auto falls back to CPU


def test_convert_with_official_download(official, tmp_path):
    pytest.importorskip("rvm.media.convert")
    from rvm.media.request import ConvertRequest
    from rvm.media.video import read_frames
    alpha = tmp_path / "alpha.mp4"
    Runtime.load(official, device="cpu").convert(ConvertRequest(need(CLIPS / "person_narrow.mp4"), output_alpha=alpha,
                                                                progress=False))
    written = read_frames(alpha)
    assert len(written) == 58 and written[0].shape == (92, 52, 3)


@pytest.mark.parametrize("level", ["disable", "basic", "all"])
@pytest.mark.parametrize("artifact", ["official", "ours fp32", "ours fp16", "ours static fp32"])
def test_every_graph_optimisation_level_matches_pytorch(official, model, store, frames, level, artifact):
    """ONNX Runtime rewrites the graph at load (fusions, layout changes) depending on the level: each kernel path a
    user may end up on must agree with PyTorch within the registered tolerance (the static graph carries the
    blocked-layout rewrites, which only the highest level turns into blocked kernels)."""
    precision = artifact.rpartition(" ")[2] if artifact != "official" else "fp32"
    if artifact == "official":
        path = official
    else:  # from the run's store: exported once for the three levels
        height, width = frames[0].shape[2:]
        static = dict(static=True, resolution=(width, height), downsample_ratio=0.5) if "static" in artifact else {}
        path = store.get(model, "onnx", precision, ExportOptions(validate=False, **static))
    with OnnxRuntime.from_path(path, device="cpu", graph_optimization=level) as runtime:
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, frames, 0.5)
    problems = result.failures(formats.get("onnx").tolerance(precision))
    assert not problems, problems

"""MNN: export through MNN's converter from our ONNX graph under the contract names, dynamic sizes against PyTorch
(two sizes and a change mid-stream), the static profile, the metadata, the state round trip and the refusals. The
rows of every precision against PyTorch, with their bounds rejecting the state zeroed every frame, are the parity
suite's (parity_tests/, 58 frames)."""
import numpy as np
import pytest

pytest.importorskip("MNN", reason="MNN is not installed: pip install 'rvm-toolkit[mnn]'")

from rvm import formats  # noqa: E402
from rvm.compare import compare  # noqa: E402
from rvm.errors import UsageError  # noqa: E402
from rvm.exporters import export  # noqa: E402
from rvm.formats import ExportOptions  # noqa: E402
from rvm.iospec import state_shapes  # noqa: E402
from rvm.media.samples import resize_frames, validation_frames  # noqa: E402
from rvm.runtimes import load  # noqa: E402
from rvm.runtimes.pytorch import PyTorchRuntime  # noqa: E402

from .artifact_helpers import (  # noqa: E402
    STATIC_RATIO,
    STATIC_SIZE,
    assert_refuses_other_sizes,
    assert_state_round_trips,
)
from .conftest import CLIPS, need  # noqa: E402

FRAMES = 8
OTHER_SIZE = (480, 272)  # person_b resized: another size and aspect than person_a's 324x184


@pytest.fixture(scope="module")
def clip():
    return validation_frames(FRAMES)  # person_a upscaled 2x: 324x184


@pytest.fixture(scope="module")
def artifacts(model, store):
    """fp32 (through export validation) and fp16, dynamic. int8 is exported, held to its bounds and shown to reject
    the state zeroed every frame by its parity row (parity_tests/), as are fp32 and fp16 over 58 frames: not again
    here, to keep the CI minutes down (an int8 export with calibration is a minute)."""
    return {p: store.get(model, "mnn", p, ExportOptions(validate=p == "fp32", validation_frames=3))
            for p in ("fp32", "fp16")}


def test_dynamic_sizes_and_a_size_change_mid_stream(model, artifacts, clip):
    """One dynamic artifact through a stream that changes size and back (324x184, 480x272, 324x184), never reset
    by the caller: the size change resets the state (the base runtime's rule) and every frame stays within the fp32
    bounds of PyTorch run on each segment from a zero state."""
    other = resize_frames(validation_frames(4, need(CLIPS / "person_b.mp4")), OTHER_SIZE)
    segments = [clip[:4], other, clip[4:8]]
    reference = PyTorchRuntime(model, device="cpu")
    with load(artifacts["fp32"], device="cpu") as runtime:
        for frames in segments:
            reference.reset()
            for frame in frames:
                src = np.ascontiguousarray(frame.transpose(2, 0, 1), np.float32) / 255
                expected, got = reference.step(src, STATIC_RATIO), runtime.step(src, STATIC_RATIO)
                assert got["pha"].shape == (1,) + frame.shape[:2]
                for name in ("pha", "fgr"):
                    assert np.abs(got[name] - expected[name]).max() <= 1e-4, (name, frame.shape)


def test_contract_names_metadata_and_state_round_trip(artifacts, clip):
    import MNN.nn
    for precision, path in artifacts.items():
        assert path.name == f"rvm_mobilenetv3_{precision}.mnn" and formats.detect(path).name == "mnn"
        assert path.stat().st_size < (9e6 if precision == "fp16" else 16e6)  # fp16 weights: half the file
        info = MNN.nn.load_module_from_file(str(path), [], []).get_info()
        assert sorted(info["inputNames"]) == sorted(["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"])
        with load(path, device="cpu") as runtime:
            metadata = runtime.info.metadata
            assert metadata.precision == precision and not metadata.static and "MNN" in metadata.versions
    with load(artifacts["fp32"], device="cpu") as runtime:
        assert_state_round_trips(runtime, clip[:3], STATIC_RATIO,
                                 shapes=state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO))


@pytest.mark.slow
def test_static_profile(model, tmp_path, clip):
    path = export(model, "mnn", "fp32", tmp_path, options=ExportOptions(
        static=True, resolution=STATIC_SIZE, downsample_ratio=STATIC_RATIO, validate=False))
    assert path.name == "rvm_mobilenetv3_fp32_324x184_s0.5.mnn"
    with load(path, device="cpu") as runtime:
        assert runtime.info.fixed_resolution == STATIC_SIZE and runtime.info.baked_downsample_ratio == STATIC_RATIO
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, clip[:4], STATIC_RATIO)
        assert result.pha_max <= 1e-4 and result.fgr_max <= 1e-4, result.as_dict()
        assert_state_round_trips(runtime, clip[:3], shapes=state_shapes("mobilenetv3", STATIC_SIZE, STATIC_RATIO))
        assert_refuses_other_sizes(runtime)


@pytest.mark.parametrize("precision,options,message", [
    ("fp32", ExportOptions(static=True, resolution=STATIC_SIZE), "--downsample-ratio"),
    ("int8", ExportOptions(), "--calibration"),
    ("fp16", ExportOptions(calibration="clip.mp4"), "int8 exports only"),
    ("int4", ExportOptions(), "supports fp32, fp16, int8"),
])
def test_refused_before_any_work(model, tmp_path, precision, options, message):
    with pytest.raises(UsageError, match=message) as error:
        export(model, "mnn", precision, tmp_path / "out", options=options)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()

"""What the artifact tests (static graphs, OpenVINO, int8, mobile formats) and the parity suite share: calibration
clips that are not the parity clip, the contract checks every stateful artifact must pass, and runtimes broken on
purpose that each row's bounds must reject."""
import numpy as np
import pytest

from rvm import formats
from rvm.compare import compare
from rvm.errors import UsageError
from rvm.formats import ExportOptions
from rvm.runtimes.pytorch import PyTorchRuntime

from .conftest import CLIPS, need

FRAMES = 8  # recurrent frames compared in these tests (the 58-frame numbers are in docs/parity.md)
STATIC_SIZE, STATIC_RATIO = (324, 184), 0.5  # person_a upscaled 2x, as export validation runs it
STATIC = dict(resolution=STATIC_SIZE, downsample_ratio=STATIC_RATIO)


def calibration() -> str:
    """person_b and person_c: real footage of the kind users matte, never the parity clip person_a."""
    return ",".join(str(need(CLIPS / name)) for name in ("person_b.mp4", "person_c.mp4"))


def failures(result, fmt: str, precision: str):
    """What of `result` exceeds the registry's bounds for this format and precision."""
    return result.failures(formats.get(fmt).tolerance(precision))


def export_each_precision(model, fmt: str, store, **options) -> dict:
    """{precision: path} of the format's static artifacts from the run's `store` (exported once per run): fp32
    through export validation, the others left to the tests to compare; int8 calibrated on `calibration()`."""
    return {precision: store.get(model, fmt, precision, ExportOptions(
                **STATIC, validate=precision == "fp32", validation_frames=3,
                calibration=calibration() if precision == "int8" else None, **options))
            for precision in formats.get(fmt).precisions}


def compare_and_reject_a_lost_state(model, runtime, frames, fmt: str, precision: str, ratio=STATIC_RATIO):
    """The comparison of `runtime` with PyTorch over `frames`, asserted within the registry's bounds, and the same
    runtime with its state zeroed every frame asserted outside them: the bounds can fail."""
    result = compare(PyTorchRuntime(model, device="cpu"), runtime, frames, ratio)
    assert failures(result, fmt, precision) == [], result.as_dict()
    broken = compare(PyTorchRuntime(model, device="cpu"), StateZeroedEveryFrame(runtime), frames, ratio)
    assert failures(broken, fmt, precision), ("a lost state passed the bounds", broken.as_dict())
    return result


def assert_state_round_trips(runtime, frames, ratio=None, shapes=None) -> None:
    """The state read out after frames[:-1] and written into a reset runtime continues the stream exactly."""
    for frame in frames[:-1]:
        runtime.step(frame, ratio)
    saved = runtime.state
    if shapes is not None:
        assert [s.shape for s in saved] == [tuple(shape) for shape in shapes]
    expected = runtime.step(frames[-1], ratio)["pha"]
    runtime.reset()
    runtime.state = saved
    np.testing.assert_array_equal(runtime.step(frames[-1], ratio)["pha"], expected)


def assert_refuses_other_sizes(runtime, size=STATIC_SIZE) -> None:
    """A static artifact refuses a frame of another size (here the transposed one, which catches a width/height
    mix-up) in one line naming the size it takes."""
    width, height = size
    with pytest.raises(UsageError, match=f"takes {width}x{height} frames only, got {height}x{width}") as error:
        runtime.step(np.zeros((width, height, 3), np.uint8))
    assert "\n" not in str(error.value)


class BrokenOnPurpose:
    """A runtime wrapped to make one deployment mistake in `step`; everything else passes through."""

    def __init__(self, runtime):
        self.runtime = runtime

    def reset(self):
        self.runtime.reset()


class StateZeroedEveryFrame(BrokenOnPurpose):
    """A runtime whose recurrent state is lost between frames: what a broken export or runner does."""

    def step(self, frame, downsample_ratio=None):
        self.runtime.reset()
        return self.runtime.step(frame, downsample_ratio)


class ColourOrderSwapped(BrokenOnPurpose):
    """A runtime fed BGR instead of RGB: the commonest deployment mistake with OpenCV frames."""

    def step(self, frame, downsample_ratio=None):
        return self.runtime.step(frame[..., ::-1].copy(), downsample_ratio)

"""What the static, OpenVINO and int8 tests share: calibration clips that are not the parity clip, and runtimes
broken on purpose that each row's bounds must reject."""
from rvm import formats

from .conftest import CLIPS, need

FRAMES = 8  # recurrent frames compared in these tests (the 58-frame numbers are in the README)
STATIC_SIZE, STATIC_RATIO = (324, 184), 0.5  # person_a upscaled 2x, as export validation runs it


def calibration() -> str:
    """person_b and person_c: real footage of the kind users matte, never the parity clip person_a."""
    return ",".join(str(need(CLIPS / name)) for name in ("person_b.mp4", "person_c.mp4"))


def failures(result, fmt: str, precision: str):
    """What of `result` exceeds the registry's bounds for this format and precision."""
    return result.failures(formats.get(fmt).tolerance(precision))


class StateZeroedEveryFrame:
    """A runtime whose recurrent state is lost between frames: what a broken export or runner does."""

    def __init__(self, runtime):
        self.runtime = runtime

    def reset(self):
        self.runtime.reset()

    def step(self, frame, downsample_ratio=None):
        self.runtime.reset()
        return self.runtime.step(frame, downsample_ratio)


class ColourOrderSwapped:
    """A runtime fed BGR instead of RGB: the commonest deployment mistake with OpenCV frames."""

    def __init__(self, runtime):
        self.runtime = runtime

    def reset(self):
        self.runtime.reset()

    def step(self, frame, downsample_ratio=None):
        return self.runtime.step(frame[..., ::-1].copy(), downsample_ratio)

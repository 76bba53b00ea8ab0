"""The virtual camera sink through pyvirtualcam: a recording backend registered with `pyvirtualcam.register_backend`
(pyvirtualcam's own extension point, the path every real backend takes) receives the composition; a real
v4l2loopback device is used where one exists (not on CI: no kernel module)."""
from pathlib import Path

import numpy as np
import pytest

from rvm.live import FileSource, LiveSession, VirtualCameraSink
from rvm.runtimes import load

from .test_live import CAMERA_FPS, RATIO, SIZE, clip, onnx_model  # noqa: F401  (fixtures)

pyvirtualcam = pytest.importorskip("pyvirtualcam", reason="pyvirtualcam is not installed (pip install -e '.[live]')")
BACKGROUND = (0, 0, 255)


class RecordingBackend:
    """A pyvirtualcam backend that keeps the frames sent to it, as a program reading the camera would see them."""

    opened = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc, self.frames = width, height, fps, fourcc, []
        self.closed = False
        RecordingBackend.opened.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True

    def device(self):
        return "rvm-test-recording"

    def native_fourcc(self):
        return None


pyvirtualcam.register_backend("rvm-test-recording", RecordingBackend)


def test_the_virtual_camera_receives_the_composition(clip, onnx_model):  # noqa: F811
    RecordingBackend.opened.clear()
    sink = VirtualCameraSink(background=",".join(map(str, BACKGROUND)), backend="rvm-test-recording")
    with load(onnx_model, device="cpu", threads=1) as runtime:
        session = LiveSession(FileSource(clip, SIZE, fps=CAMERA_FPS), runtime, [sink], RATIO)
        session.start()
        session.wait(60)
        session.stop()
    probe, camera = RecordingBackend.opened  # the probe before the source opened, then the camera at its size
    assert probe.closed and camera.closed and (camera.width, camera.height) == SIZE
    assert camera.fourcc == pyvirtualcam.util.encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    stats = session.stats()
    assert len(camera.frames) == stats["sinks"]["virtual-camera"]["delivered"] >= 10
    frames = np.stack(camera.frames).reshape(-1, SIZE[1], SIZE[0], 3)
    corner = frames[:, :8, :8].reshape(-1, 3)  # the clip's top-left corner is background
    assert np.abs(corner.astype(int) - BACKGROUND).max() <= 2
    person = np.abs(frames.astype(int) - BACKGROUND).max(axis=-1) > 30
    assert person.mean() > 0.05  # and the person is drawn over it


def loopback_devices():
    return [path for path in Path("/sys/class/video4linux").glob("video*")
            if "loopback" in (path / "name").read_text().lower() or "rvm" in (path / "name").read_text().lower()]


@pytest.mark.skipif(not loopback_devices(), reason="no v4l2loopback device here (the kernel module is not loaded: "
                    "`sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=RVM`)")
def test_a_real_v4l2loopback_device(clip, onnx_model):  # noqa: F811
    device = f"/dev/{loopback_devices()[0].name}"
    sink = VirtualCameraSink(background="blur", device=device, backend="v4l2loopback")
    with load(onnx_model, device="cpu", threads=1) as runtime:
        session = LiveSession(FileSource(clip, SIZE, fps=CAMERA_FPS), runtime, [sink], RATIO)
        session.start()
        session.wait(60)
        session.stop()
    assert session.stats()["sinks"]["virtual-camera"]["delivered"] >= 10

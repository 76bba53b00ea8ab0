"""`rvm live --preview`: the composition in a window, shown for real on a virtual X server (Xvfb) where one is
installed; keys pressed through the X server (XTEST), as a keyboard sends them: `r` resets the state, `q` ends.

Without Xvfb (`apt-get install xvfb`) the window test skips and says so: then only the no-display failure is
checked (tests/test_live.py, `test_sinks_that_cannot_start_fail_in_one_line_before_capture`). Not run here at all:
closing the window with a window manager's close button (Xvfb runs none; it calls the same handler as `q`), and
Windows, where Tk needs no X server.
"""
import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import ImageGrab

from .test_live import _delivered, clip, finished, onnx_model, read_stats, rvm, wait_for  # noqa: F401 (fixtures)

SCREEN = (640, 480)


@pytest.fixture(scope="module")
def display():
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no Xvfb here (Debian: apt-get install xvfb): the preview window was not shown; the no-display "
                    "failure is tested in test_live.py")
    read, write = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "{}x{}x24".format(*SCREEN), "-br",
                               "-nolisten", "tcp"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as numbers:
        number = numbers.readline().strip()  # written once the server accepts clients
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)


def press(display: str, key: str) -> None:
    """Press and release `key` on `display` through XTEST (libXtst), as a keyboard would."""
    x11, xtst = ctypes.CDLL("libX11.so.6"), ctypes.CDLL("libXtst.so.6")
    x11.XOpenDisplay.restype, x11.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    x11.XStringToKeysym.restype, x11.XStringToKeysym.argtypes = ctypes.c_ulong, [ctypes.c_char_p]
    x11.XKeysymToKeycode.restype, x11.XKeysymToKeycode.argtypes = ctypes.c_ubyte, [ctypes.c_void_p, ctypes.c_ulong]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    connection = x11.XOpenDisplay(display.encode())
    assert connection, f"cannot open {display}"
    code = x11.XKeysymToKeycode(connection, x11.XStringToKeysym(key.encode()))
    xtst.XTestFakeKeyEvent(connection, code, 1, 0)
    xtst.XTestFakeKeyEvent(connection, code, 0, 0)
    x11.XFlush(connection)
    x11.XCloseDisplay(connection)


def test_preview_shows_the_composition_and_its_keys_reset_and_stop(display, clip, onnx_model, tmp_path):  # noqa: F811
    stats = tmp_path / "stats.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RVM_")} | {"DISPLAY": display}
    # 58 frames at 10 fps: the clip loops (a reset of its own) only after 5.8 s
    process = rvm("--input-source", clip, "--loop", "--fps", "10", "--resolution", "160x96", "--model", onnx_model,
                  "--preview", "--background", "0,255,0", "--stats", stats, cwd=tmp_path, env=env)
    wait_for(process, lambda: _delivered(stats, 5))
    screen = np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB")).astype(int)
    red, green, blue = screen[..., 0], screen[..., 1], screen[..., 2]
    backdrop = (green > 200) & (red < 60) & (blue < 60)  # the composition's green background
    person = (screen.sum(-1) > 60) & ~backdrop  # neither the black screen nor the background
    assert 0.3 * 160 * 96 < backdrop.sum() <= 160 * 96, backdrop.sum()  # one window of the source's size
    assert person.sum() > 0.05 * 160 * 96, "the person must be shown over the background"
    press(display, "r")
    wait_for(process, lambda: read_stats(stats).get("resets", 0) >= 1)
    assert read_stats(stats)["captured"] < 58, "the reset must come from the key, not from the clip's loop"
    press(display, "q")
    _, err = finished(process)
    assert process.returncode == 0, err.decode()
    assert "recurrent state reset (preview window)" in err.decode() and "preview showed" in err.decode()

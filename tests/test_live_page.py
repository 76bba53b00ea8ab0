"""`rvm live --page`: the page opened in real Chromium (Debian's, driven by Playwright as tests/test_web.py does)
shows the person over a transparent background, its reset button resets the session, and the server serves
nothing but the page."""
import io
import json
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from rvm.live import FileSource, LiveSession, PageSink
from rvm.runtimes import load

from .conftest import browser_or_skip
from .test_live import CAMERA_FPS, RATIO, SIZE, clip, onnx_model  # noqa: F401  (fixtures)

sync_playwright, CHROMIUM = browser_or_skip()


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_page_shows_the_person_over_a_transparent_background(clip, onnx_model):  # noqa: F811
    sink = PageSink(port=0)
    with load(onnx_model, device="cpu", threads=1) as runtime:
        session = LiveSession(FileSource(clip, SIZE, fps=CAMERA_FPS, loop=True), runtime, [sink], RATIO)
        session.start()
        try:
            url = sink.url
            assert url.startswith("http://127.0.0.1:")
            request = urllib.request.Request(url + "ratio?value=0.4", method="POST")
            with urllib.request.urlopen(request, timeout=10):
                assert session.stats()["downsample_ratio"] == 0.4  # changed while running
            session.set_ratio(RATIO)
            for path in ("etc/passwd", "../pyproject.toml", "index.html/..", "rvm/live/page.py"):
                assert status(url + path) == 404, path
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 640, "height": 360})
                page.set_default_timeout(60_000)
                page.goto(url)
                page.wait_for_function("window.rvmLive.frames >= 5")
                resets = session.stats()["resets"]
                page.click("#reset")
                page.wait_for_function("document.getElementById('stats').textContent.includes('fps')")
                page.wait_for_function("window.rvmLive.frames >= 10")
                assert session.stats()["resets"] > resets
                session.stop()  # the page keeps the last frame it drew
                shown = page.evaluate("window.rvmLive.last")
                screenshot = Image.open(io.BytesIO(page.screenshot(omit_background=True, clip={
                    "x": 0, "y": 0, "width": SIZE[0], "height": SIZE[1]})))
                browser.close()
        finally:
            session.stop()
    assert shown == sink._index
    served = np.frombuffer(sink._frame, np.uint8).reshape(SIZE[1], SIZE[0], 4)
    pixels = np.asarray(screenshot.convert("RGBA"))
    background, person = served[..., 3] == 0, served[..., 3] == 255
    assert background.mean() > 0.2 and person.mean() > 0.05, "the frame must hold background and a person"
    assert (pixels[..., 3][background] == 0).all()  # transparent where the matte is: OBS shows what is behind
    assert (pixels[..., 3][person] == 255).all()
    assert np.abs(pixels[..., :3][person].astype(int) - served[..., :3][person]).mean() < 2
    assert json.loads(json.dumps(session.stats()))["sinks"]["page"]["delivered"] >= 10

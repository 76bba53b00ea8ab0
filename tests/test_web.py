"""`rvm web`: the page it builds, run in a real headless Chromium whose fake camera plays a sample clip.

The page's test hook (window.rvm.record) returns the exact pixels it fed the model and the alpha and foreground
it computed; the same pixels go through the Node TF.js runner / native ONNX Runtime (same engine and weights:
held tightly) and through PyTorch (held to the format's registered tolerance), carrying the recurrent state
over the same frames. Frames/s per engine and backend and a screenshot are written to RVM_WEB_RESULTS (a temporary
folder unless set).

Chromium is Debian's `chromium` package driven by Playwright (no browser download); `.ci/run` installs it.
"""
import base64
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from rvm import formats
from rvm.commands import cli
from rvm.compare import compare
from rvm.formats import ExportOptions
from rvm.media.samples import validation_frames
from rvm.runtimes.pytorch import PyTorchRuntime
from rvm.web import site as web

from .conftest import BACKGROUND, CLIPS, browser_or_skip, dgf_model, need

sync_playwright, CHROMIUM = browser_or_skip()
if not (web.MODULES / "onnxruntime-web").is_dir():
    pytest.skip(f"the page's engines are not installed: run `npm ci` in {web.WEBAPP_DIR} (or `make install`)",
                allow_module_level=True)

RATIO = 0.5  # at 324x184 (the clip upscaled 2x), as export validation uses it
CLIP_FRAMES = 30
# The browser against the same engine outside it (same graph, weights and input pixels), (max, mean) abs error
# for alpha and foreground alike. Measured here: TF.js wasm in Chromium vs in Node bit-identical over 8 frames;
# TF.js WebGL (SwiftShader, fp32 textures) 9.7e-6 / 1.1e-7; onnxruntime-web wasm vs native ONNX Runtime
# 6.7e-6 / 5.3e-8. A page dropping the recurrent state each frame would be ~0.7 / 1.2e-2 off (asserted to be
# rejected). GPU backends get room for hardware fp32 arithmetic.
SAME_ENGINE = {"wasm": (5e-5, 1e-6), "webgl": (1e-3, 1e-5), "webgpu": (1e-3, 1e-5)}
FRAMES = {"wasm": 8, "webgl": 3, "webgpu": 8}  # WebGL through SwiftShader takes ~2.5 s a frame here
TFJS_PRECISION = formats.get("tfjs").precisions[0]  # the default a user's `rvm export --format tfjs` writes
TFJS_MODEL, ONNX_MODEL = f"rvm_mobilenetv3_tfjs_{TFJS_PRECISION}", "rvm_mobilenetv3_fp32"
CAMERA = ["--no-sandbox", "--use-fake-device-for-media-stream", "--enable-unsafe-swiftshader"]


@pytest.fixture(scope="session")
def model():
    return dgf_model()


@pytest.fixture(scope="session")
def artifacts(model, store):
    """The TF.js and fp32 ONNX artifacts from the run's store (the page's comparisons are the validation here)."""
    options = ExportOptions(validate=False)
    return {"tfjs": store.get(model, "tfjs", TFJS_PRECISION, options),
            "onnx": store.get(model, "onnx", "fp32", options)}


@pytest.fixture(scope="module")
def site(artifacts, tmp_path_factory):
    return web.build([artifacts["tfjs"], artifacts["onnx"]], tmp_path_factory.mktemp("web") / "site")


@pytest.fixture(scope="module")
def url(site):
    server = web.make_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield web.url_of(server)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The sample clip upscaled 2x as raw 4:2:0 YUV in a .y4m, which Chromium's fake camera plays in a loop."""
    frames = validation_frames(CLIP_FRAMES, need(CLIPS / "person_a.mp4"))
    path = tmp_path_factory.mktemp("clip") / "person_a_2x.y4m"
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
            out.write(b"FRAME\n" + yuv.tobytes())
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Frames/s per engine and backend, written as JSON beside the screenshot when the module ends."""
    folder = Path(os.environ.get("RVM_WEB_RESULTS") or tmp_path_factory.mktemp("web-results"))
    folder.mkdir(parents=True, exist_ok=True)
    measured = {"folder": folder, "speed": {}}
    yield measured
    (folder / "speed.json").write_text(json.dumps(measured["speed"], indent=2))
    print(f"\nbrowser results in {folder}: {json.dumps(measured['speed'])}")


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright, clip):
    """Chromium whose camera is the clip, granted without a prompt."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CAMERA + [
        "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}"])
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 620})
    page = context.new_page()
    yield page
    context.close()


def open_page(page, url, timeout_s=120, **params):
    page.set_default_timeout(timeout_s * 1000)
    page.goto(url + "?" + "&".join(f"{key}={value}" for key, value in params.items()))
    return page.evaluate("window.rvm.ready")


def decode(recording):
    """(frames float32 NCHW in 0..1 exactly as the page computed them, page outputs as Runtime.step returns)."""
    height, width = recording["height"], recording["width"]
    frames, outputs = [], []
    for frame in recording["frames"]:
        rgb = np.frombuffer(base64.b64decode(frame["src"]), np.uint8).reshape(height, width, 3)
        # the page divides in double precision, then rounds to float32
        frames.append((rgb.transpose(2, 0, 1)[None] / 255.0).astype(np.float32))
        pha = np.frombuffer(base64.b64decode(frame["pha"]), np.float32).reshape(1, 1, height, width)
        fgr = np.frombuffer(base64.b64decode(frame["fgr"]), np.float32).reshape(1, height, width, 3)
        outputs.append({"pha": pha, "fgr": fgr.transpose(0, 3, 1, 2)})
    return frames, outputs


class Recorded:
    """The page's outputs replayed in order, so `compare` can hold them against a runtime."""

    def __init__(self, outputs):
        self.outputs, self.index = outputs, 0

    def reset(self):
        self.index = 0

    def step(self, frame, downsample_ratio=None):
        self.index += 1
        return self.outputs[self.index - 1]


def record_in_browser(page, url, results, model, backend, count):
    status = open_page(page, url, model=model, backend=backend, ratio=RATIO)
    assert (status["backend"], status["error"], status["crossOriginIsolated"]) == (backend, None, True)
    recording = page.evaluate(f"window.rvm.record({count})")
    assert (recording["width"], recording["height"], recording["ratio"]) == (324, 184, RATIO)
    status = page.evaluate("window.rvm.status()")
    assert status["source"] == "camera" and status["framesSinceReset"] >= count
    results["speed"][f"{status['engine']} {backend}"] = {
        "frames_per_second": round(status["fps"], 2), "model_ms": round(status["latency"], 1),
        "size": "324x184", "ratio": RATIO, "detail": status["detail"]}
    page.screenshot(path=str(results["folder"] / f"page_{status['engine']}_{backend}.png"))
    return decode(recording)


def skip_unless_offered(page, url, model, backend):
    """WebGPU has no adapter in headless Chromium on a machine without a GPU: the page says so and the test skips."""
    if backend != "webgpu":
        return
    try:
        open_page(page, url, model=model, backend=backend, ratio=RATIO)
    except Exception:
        pytest.skip(f"this headless Chromium offers no WebGPU: {page.evaluate('window.rvm.status()')['error']}")


def assert_same_engine(result, backend):
    most, mean = SAME_ENGINE[backend]
    assert result.pha_max <= most and result.pha_mean <= mean, result
    assert result.fgr_max <= most and result.fgr_mean <= mean, result


def assert_within_registered(result, fmt, precision):
    """The registry's bounds for that format; drift is judged over longer runs (the parity suite), not 3..8 frames."""
    tolerance = formats.get(fmt).tolerance(precision)
    assert not tolerance.failures(result), result


def reset_then_step(runtime, frame):
    runtime.reset()
    return runtime.step(frame, RATIO)


@pytest.mark.parametrize("backend", ["wasm", "webgl", "webgpu"])
def test_tfjs_page_matches_node_runner_and_pytorch(page, url, results, artifacts, model, backend):
    from rvm.runtimes.tfjs import TfjsRuntime

    skip_unless_offered(page, url, TFJS_MODEL, backend)
    frames, outputs = record_in_browser(page, url, results, TFJS_MODEL, backend, FRAMES[backend])
    with TfjsRuntime.from_path(artifacts["tfjs"]) as node:
        same = compare(node, Recorded(outputs), frames, RATIO)
        stateless = compare(Recorded([reset_then_step(node, frame) for frame in frames]), Recorded(outputs), frames)
    torch = compare(PyTorchRuntime(model, device="cpu"), Recorded(outputs), frames, RATIO)
    print(f"TF.js {backend} in Chromium vs Node: {same}\n  vs PyTorch: {torch}\n  vs Node dropping the state: "
          f"{stateless}")
    assert same.frames == len(frames) == FRAMES[backend]
    assert_same_engine(same, backend)
    # the bound would reject a page that drops the recurrent state each frame
    with pytest.raises(AssertionError):
        assert_same_engine(stateless, backend)
    assert_within_registered(torch, "tfjs", TFJS_PRECISION)
    assert torch.pha_mean > 1e-5, "stored weights must differ from PyTorch: was PyTorch compared with itself?"


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_onnx_page_matches_onnxruntime_and_pytorch(page, url, results, artifacts, model, backend):
    from rvm.runtimes.onnxruntime import OnnxRuntime

    skip_unless_offered(page, url, ONNX_MODEL, backend)
    frames, outputs = record_in_browser(page, url, results, ONNX_MODEL, backend, FRAMES[backend])
    same = compare(OnnxRuntime.from_path(artifacts["onnx"], device="cpu"), Recorded(outputs), frames, RATIO)
    torch = compare(PyTorchRuntime(model, device="cpu"), Recorded(outputs), frames, RATIO)
    print(f"ONNX {backend} in Chromium vs ONNX Runtime: {same}\n  vs PyTorch: {torch}")
    assert same.frames == FRAMES[backend]
    assert_same_engine(same, backend)
    assert_within_registered(torch, "onnx", "fp32")


def test_auto_backend_and_page_controls(page, url, results):
    status = open_page(page, url)  # every setting left to the page: first model, auto backend, auto ratio
    assert status["model"] == TFJS_MODEL
    # WebGPU is absent here and WebGL is SwiftShader (software), which auto passes over for wasm
    assert status["backend"] == "wasm", status
    page.wait_for_function("window.rvm.status().frames >= 2")
    assert page.locator("#ratio-used").inner_text() == "using 1.000"  # 324x184: min(512/324, 1)
    assert "frames/s" in page.locator("#fps").inner_text() and page.locator("#message").is_hidden()
    page.check("input[name=background][value=transparent]")
    assert page.locator("#backdrop").get_attribute("class") == "transparent"
    page.set_input_files("#image", str(need(BACKGROUND)))
    assert page.locator("#backdrop").get_attribute("class") == "image"
    assert page.locator("#backdrop").evaluate("e => e.style.backgroundImage").startswith('url("blob:')
    page.fill("#colour", "#3366ff")
    assert page.locator("#backdrop").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(51, 102, 255)"
    page.screenshot(path=str(results["folder"] / "page.png"))


def test_local_video_file_resets_the_state(page, url, tmp_path):
    open_page(page, url, model=TFJS_MODEL, backend="wasm", ratio=RATIO)
    page.wait_for_function("window.rvm.status().framesSinceReset >= 3")
    video = tmp_path / "clip.webm"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=25)
        stream.width, stream.height, stream.pix_fmt = 324, 184, "yuv420p"
        for rgb in validation_frames(10, need(CLIPS / "person_b.mp4")):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    page.set_input_files("#file", str(video))
    page.wait_for_function("window.rvm.status().source === 'file' && window.rvm.status().sourceFrames >= 3")
    status = page.evaluate("window.rvm.status()")
    # the state restarted with the new source (a camera frame in flight at the switch may count as the file's)
    assert 1 <= status["framesSinceReset"] <= status["sourceFrames"] < status["frames"], status
    assert status["error"] is None


def test_undecodable_video_is_shown_on_the_page(page, url, tmp_path):
    open_page(page, url, model=TFJS_MODEL, backend="wasm", ratio=RATIO)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    page.set_input_files("#file", str(broken))
    page.wait_for_function("window.rvm.status().error !== null")
    assert "cannot decode \"broken.mp4\"" in page.locator("#message").inner_text()


def test_refused_camera_is_shown_on_the_page(playwright, url):
    # no fake UI: headless Chromium refuses the permission prompt, as a user who clicks "Block"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CAMERA)
    try:
        page = browser.new_page()
        open_page(page, url, model=TFJS_MODEL, backend="wasm")
        assert "Camera access was refused" in page.locator("#message").inner_text()
        assert page.evaluate("window.rvm.status().source") is None
    finally:
        browser.close()


def test_unavailable_backend_is_shown_on_the_page(page, url):
    with pytest.raises(Exception, match="has no backend"):
        open_page(page, url, model=ONNX_MODEL, backend="webgl")
    assert "onnxruntime-web has no backend \"webgl\"" in page.locator("#message").inner_text()
    if page.evaluate("async () => !navigator.gpu || !(await navigator.gpu.requestAdapter())"):
        with pytest.raises(Exception, match="No TF.js backend works"):
            open_page(page, url, model=TFJS_MODEL, backend="webgpu")
        assert page.locator("#message").inner_text().startswith("No TF.js backend works in this browser (webgpu: ")
        assert page.locator("#engine-line").inner_text() == "not running"


# ---- the CLI --------------------------------------------------------------------------------------------

def rvm_web(capsys, *args):
    """`rvm web ARGS` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = cli.main(["web", *map(str, args)])
    return code, capsys.readouterr().err


def test_build_is_self_contained(site):
    assert json.loads((site / "models.json").read_text()) == [
        {"name": TFJS_MODEL, "engine": "tfjs", "url": f"models/{TFJS_MODEL}/model.json"},
        {"name": ONNX_MODEL, "engine": "onnx", "url": f"models/{ONNX_MODEL}.onnx"}]
    assert {path.name for path in (site / "vendor").iterdir()} == {
        Path(name).name for names in web.VENDOR_FILES.values() for name in names}
    page_text = "".join((site / name).read_text() for name in web.PAGE_FILES)
    assert "http://" not in page_text and "https://" not in page_text, "the page must load nothing from elsewhere"
    assert not [path for path in site.parent.iterdir() if path.name.startswith((".tmp-", ".old-"))]


def test_cli_refuses_bad_input_and_writes_nothing(artifacts, tmp_path, capsys):
    output = tmp_path / "site"
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    code, err = rvm_web(capsys, not_a_model, "-o", output)
    assert code == 2 and err.count("\n") == 1, err
    assert "is not a TF.js model folder (holding model.json) nor an .onnx file" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = rvm_web(capsys, artifacts["onnx"], "-o", output, "--serve", "--port", port)
    assert code == 2 and err.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in err, err
    assert list(tmp_path.iterdir()) == [not_a_model], "nothing may be written on a refused request"
    assert rvm_web(capsys, artifacts["onnx"], "-o", output)[0] == 0
    code, err = rvm_web(capsys, artifacts["tfjs"], "-o", output)
    assert code == 2 and "exists: pass --overwrite" in err
    assert rvm_web(capsys, artifacts["tfjs"], "-o", output, "--overwrite")[0] == 0
    assert [entry["engine"] for entry in json.loads((output / "models.json").read_text())] == ["tfjs"]
    assert not (output / "vendor" / "ort.wasm.min.js").exists(), "only the engines the models need are copied"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photos", "site"]


def test_cli_refuses_onnx_the_page_cannot_feed(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def model_with_inputs(path, names, dtype):
        inputs = [helper.make_tensor_value_info(name, dtype, None) for name in names]
        output = helper.make_tensor_value_info("fgr", dtype, None)
        graph = helper.make_graph([helper.make_node("Identity", [names[0]], ["fgr"])], "g", inputs, [output])
        onnx.save(helper.make_model(graph), str(path))
        return path

    fp16 = model_with_inputs(tmp_path / "rvm_fp16.onnx", ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"],
                             TensorProto.FLOAT16)
    code, err = rvm_web(capsys, fp16, "-o", tmp_path / "site")
    assert code == 2 and "takes fp16 input" in err and "--precision fp32" in err, err
    other = model_with_inputs(tmp_path / "other.onnx", ["input"], TensorProto.FLOAT)
    code, err = rvm_web(capsys, other, "-o", tmp_path / "site")
    assert code == 2 and "is not an RVM ONNX model: its inputs are ['input']" in err, err
    (tmp_path / "broken.onnx").write_bytes(b"not protobuf at all")
    code, err = rvm_web(capsys, tmp_path / "broken.onnx", "-o", tmp_path / "site")
    assert code == 2 and "is not a readable ONNX model" in err, err
    assert not (tmp_path / "site").exists()


def test_cli_serve_prints_a_url_that_serves_the_page(artifacts, tmp_path):
    import urllib.request

    server = subprocess.Popen([sys.executable, "-m", "rvm.commands.cli", "web", str(artifacts["onnx"]), "-o",
                               str(tmp_path / "site"), "--serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().startswith("built ")
        line = server.stdout.readline()
        assert line.startswith("serving ") and "http://127.0.0.1:" in line, line
        address = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(address, timeout=10) as answer:
            assert b"Robust Video Matting" in answer.read()
            assert answer.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(address + "vendor/ort-wasm-simd-threaded.wasm", timeout=10) as answer:
            assert answer.headers["Content-Type"] == "application/wasm"
    finally:
        server.terminate()
        server.wait(timeout=10)

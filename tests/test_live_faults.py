"""Faults of `rvm live`: a network stream (the clip as MPEG-TS over a local HTTP server) cut mid-run is opened
again with backoff and matting goes on with a fresh state; a stream that does not come back ends the command with
one line and exit 1 within the reconnect time."""
import functools
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import av
import pytest

from rvm.live import CaptureSource, LiveSession
from rvm.live.session import SourceLost
from rvm.live.sources import open_live_source
from rvm.media.video import read_frames
from rvm.runtimes import load

from .test_live import RATIO, SIZE, Kept, clip, onnx_model, run_until  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def stream_bytes(clip, tmp_path_factory):  # noqa: F811
    """The clip at SIZE as an MPEG-TS stream (what an HTTP or UDP camera sends)."""
    path = tmp_path_factory.mktemp("stream") / "clip.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "tune": "zerolatency"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for frame in read_frames(clip, size=SIZE):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path.read_bytes()


class Stream(BaseHTTPRequestHandler):
    """Serves the stream; the first request is cut after a third of it, as a dropped connection."""

    def __init__(self, *args, data, requests, **kwargs):
        self.data, self.requests = data, requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        cut = len(self.data) // 3 // 188 * 188 if len(self.requests) == 1 else len(self.data)
        self.wfile.write(self.data[:cut])
        self.close_connection = True

    def log_message(self, *args):
        pass


def serve(data):
    requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Stream, data=data, requests=requests))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/clip.ts", requests


def test_a_stream_cut_mid_run_is_opened_again(stream_bytes, onnx_model):  # noqa: F811
    server, url, requests = serve(stream_bytes)
    kept = Kept()
    try:
        with load(onnx_model, device="cpu", threads=1) as runtime:
            session = LiveSession(CaptureSource(url), runtime, [kept], RATIO, reconnect_s=10)
            stats = run_until(session, lambda s: s["reopens"] >= 2 and s["matted"] >= 10)
    finally:
        server.shutdown()
        server.server_close()
    assert len(requests) >= 3 and stats["resets"] >= 2  # each reopening starts the recurrent state again
    assert stats["source"]["size"] == f"{SIZE[0]}x{SIZE[1]}"


def test_a_stream_that_does_not_come_back_ends_in_one_line(stream_bytes, onnx_model, tmp_path):  # noqa: F811
    server, url, requests = serve(stream_bytes)
    process = subprocess.Popen([sys.executable, "-m", "rvm.commands.cli", "live", "--input-source", url, "--model",
                                str(onnx_model), "--output-alpha", "alpha.mp4", "--reconnect-seconds", "2"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not requests:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    server.shutdown()
    server.server_close()
    _, err = process.communicate(timeout=120)
    last = err.decode().strip().splitlines()[-1]
    assert process.returncode == 1, err.decode()
    assert last.startswith(f"rvm: error: {url} was lost and did not come back within 2 s"), last
    assert len(read_frames(tmp_path / "alpha.mp4")) >= 1  # what was recorded before the loss is kept, playable


class Counted(SimpleHTTPRequestHandler):
    """Python's file server (a Content-Length, no range requests), counting requests."""

    def __init__(self, *args, requests, **kwargs):
        self.requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


def serve_folder(folder):
    requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counted, requests=requests,
                                                                      directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/", requests


@pytest.mark.parametrize("loop", [False, True])
def test_a_file_over_http_plays_at_its_frame_rate_and_ends_or_loops(stream_bytes, onnx_model, tmp_path, loop):  # noqa: F811
    (tmp_path / "clip.ts").write_bytes(stream_bytes)
    frames = len(read_frames(tmp_path / "clip.ts"))
    server, url, requests = serve_folder(tmp_path)
    kept = Kept()
    try:
        with load(onnx_model, device="cpu", threads=1) as runtime:
            source = open_live_source(url + "clip.ts", loop=loop)
            session = LiveSession(source, runtime, [kept], RATIO, reconnect_s=10)
            started = time.perf_counter()
            stats = run_until(session, lambda s: s["captured"] >= frames + 10 if loop else False)
            elapsed = time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()
    assert source.finite and not source.live
    if loop:
        assert stats["captured"] >= frames + 10 and len(requests) == 2  # opened again at its end, once
    else:
        assert stats["captured"] == frames and len(requests) == 1 and stats["reopens"] == 0  # ended, as a file
        assert elapsed >= (frames - 1) / 30 * 0.9  # paced at its 30 frames/s, not delivered as fast as it arrives


def test_a_source_that_never_delivers_ends_with_the_decoders_reason(clip, onnx_model, tmp_path):  # noqa: F811
    """An MP4 whose index is at its end cannot be read from a server without range requests: it opens, then fails
    on its first read. It is not 'back' until it delivers, so the waits grow and the session ends with FFmpeg's
    reason, after a bounded number of requests."""
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    server, url, requests = serve_folder(tmp_path)
    try:
        with load(onnx_model, device="cpu", threads=1) as runtime:
            session = LiveSession(open_live_source(url + "clip.mp4"), runtime, [Kept()], RATIO, reconnect_s=3)
            with pytest.raises(SourceLost, match="did not come back within 3 s .*last: .*Input/output error") as error:
                run_until(session, lambda s: False, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert "\n" not in str(error.value)
    assert len(requests) <= 8, len(requests)  # waits of 0.25, 0.5, 1 s...: not thousands of requests

"""Our local servers refuse what a web page the user happens to visit could send them: state-changing requests from
another origin (a "simple" cross-origin POST needs no preflight) and requests naming another host (DNS rebinding),
while the page's own requests, and clients that are not browsers, are served. Forged headers against real servers:
`rvm live --page` (PageSink) and `rvm web --serve` (the static page server)."""
import http.client
import threading

import pytest

from rvm.live import FileSource, LiveSession, PageSink
from rvm.runtimes import load
from rvm.web.guard import refusal
from rvm.web.site import bind

from .test_live import CAMERA_FPS, RATIO, SIZE, clip, onnx_model  # noqa: F401  (fixtures)

EVIL = "http://evil.example"


@pytest.mark.parametrize("method, headers, refused", [
    ("GET", {"Host": "127.0.0.1:8765"}, False),
    ("GET", {"Host": "localhost:8765"}, False),
    ("GET", {"Host": "evil.example:8765"}, True),  # DNS rebinding: a name of the attacker's resolving to 127.0.0.1
    ("GET", {"Host": "127.0.0.1:9999"}, True),
    ("GET", {}, True),
    ("POST", {"Host": "127.0.0.1:8765", "Origin": "http://127.0.0.1:8765"}, False),  # the page's own request
    ("POST", {"Host": "127.0.0.1:8765"}, False),  # curl, OBS: no Origin
    ("POST", {"Host": "127.0.0.1:8765", "Origin": EVIL}, True),
    ("POST", {"Host": "127.0.0.1:8765", "Origin": "null"}, True),  # a sandboxed frame or a file:// page
    ("POST", {"Host": "127.0.0.1:8765", "Sec-Fetch-Site": "cross-site"}, True),
    ("GET", {"Host": "127.0.0.1:8765", "Origin": EVIL}, False),  # reads stay readable only by the page (no CORS)
])
def test_refusal_on_loopback(method, headers, refused):
    assert (refusal(method, headers, "127.0.0.1", 8765) is not None) == refused


def test_a_server_opened_to_the_network_on_purpose_takes_any_host_but_not_other_origins():
    assert refusal("GET", {"Host": "studio-box.lan:8765"}, "0.0.0.0", 8765) is None
    assert refusal("POST", {"Host": "studio-box.lan:8765", "Origin": "http://studio-box.lan:8765"}, "0.0.0.0",
                   8765) is None
    assert refusal("POST", {"Host": "studio-box.lan:8765", "Origin": EVIL}, "0.0.0.0", 8765) is not None


def request(port: int, method: str, path: str, headers: dict):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=b"" if method == "POST" else None, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_live_page_refuses_cross_origin_state_changes(clip, onnx_model):  # noqa: F811
    sink = PageSink(port=0)
    with load(onnx_model, device="cpu", threads=1) as runtime:
        session = LiveSession(FileSource(clip, SIZE, fps=CAMERA_FPS, loop=True), runtime, [sink], RATIO)
        session.start()
        try:
            port = int(sink.url.rstrip("/").rsplit(":", 1)[1])
            own = {"Host": f"127.0.0.1:{port}"}
            forged = {**own, "Origin": EVIL, "Content-Type": "text/plain"}
            assert request(port, "POST", "/ratio?value=0.9", forged)[0] == 403
            assert request(port, "POST", "/reset", forged)[0] == 403
            assert session.stats()["downsample_ratio"] == RATIO and session.stats()["resets"] == 0
            assert request(port, "GET", "/stats", {"Host": f"evil.example:{port}"})[0] == 403  # DNS rebinding
            status, body = request(port, "POST", "/ratio?value=0.4", {**own, "Origin": f"http://127.0.0.1:{port}"})
            assert status == 200 and session.stats()["downsample_ratio"] == 0.4
            assert request(port, "GET", "/stats", {"Host": f"localhost:{port}"})[0] == 200
        finally:
            session.stop()


def test_web_page_server_refuses_other_hosts(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>page</title>")
    server = bind(tmp_path, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert request(port, "GET", "/index.html", {"Host": f"127.0.0.1:{port}"})[0] == 200
        status, body = request(port, "GET", "/index.html", {"Host": f"evil.example:{port}"})
        assert status == 403 and b"not this server's address" in body
    finally:
        server.shutdown()
        server.server_close()

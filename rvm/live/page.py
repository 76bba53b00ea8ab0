"""The page sink: a local page that shows the RGBA matte over a transparent background, for OBS's Browser Source
or any browser, with the session's stats and a reset button.

The server binds 127.0.0.1 unless told otherwise and serves only this page and its four endpoints: `/frame`
(the newest RGBA frame as raw bytes, long-polled with `?after=N`), `/stats` (JSON), `POST /reset`, and
`POST /ratio?value=R`. Raw RGBA over the loopback costs no encoding on the machine that is busy matting; the page
draws it with `putImageData` into a canvas, whose untouched pixels stay transparent.
"""
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Optional
from urllib.parse import parse_qs, urlparse

from rvm.errors import UsageError
from rvm.live.sinks import LiveSink, Matted, rendered
from rvm.media.video import to_uint8_hwc
from rvm.web.guard import Guarded
from rvm.web.site import bind_handler, url_of

log = logging.getLogger(__name__)
LONG_POLL_S = 2.0  # a /frame request waits this long for a newer frame, then answers 204

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>rvm live</title>
<style>
html, body { margin: 0; background: transparent; overflow: hidden; }
canvas { display: block; }
#panel { font: 13px sans-serif; color: #eee; background: rgba(0, 0, 0, 0.6); padding: 4px 8px; position: fixed;
         right: 0; bottom: 0; }
body.clean #panel { display: none; }
</style></head>
<body>
<canvas id="matte" width="0" height="0"></canvas>
<div id="panel"><span id="stats">waiting for frames</span>
  <button id="reset" title="start the recurrent state again">reset</button></div>
<script>
"use strict";
// ?clean hides the panel (for OBS); the canvas is transparent wherever the matte is
if (new URLSearchParams(location.search).has("clean")) document.body.classList.add("clean");
const canvas = document.getElementById("matte"), context = canvas.getContext("2d");
window.rvmLive = {frames: 0, last: -1};
async function frames() {
  for (;;) {
    try {
      const response = await fetch("frame?after=" + window.rvmLive.last, {cache: "no-store"});
      if (response.status !== 200) { if (response.status !== 204) await sleep(500); continue; }
      const width = +response.headers.get("X-Width"), height = +response.headers.get("X-Height");
      const pixels = new Uint8ClampedArray(await response.arrayBuffer());
      if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
      context.putImageData(new ImageData(pixels, width, height), 0, 0);
      window.rvmLive.last = +response.headers.get("X-Frame");
      window.rvmLive.frames += 1;
    } catch (error) { await sleep(500); }  // the session stopped or restarts: try again
  }
}
async function stats() {
  for (;;) {
    try {
      const s = await (await fetch("stats", {cache: "no-store"})).json();
      document.getElementById("stats").textContent = `${s.fps.toFixed(1)} fps, captured ${s.captured}, ` +
        `matted ${s.matted}, dropped ${s.dropped}, model ${s.model_ms_p50} ms, ` +
        `latency p50 ${s.latency_ms_p50} / p95 ${s.latency_ms_p95} ms`;
    } catch (error) { /* shown again at the next poll */ }
    await sleep(1000);
  }
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
document.getElementById("reset").onclick = () => fetch("reset", {method: "POST"});
frames(); stats();
</script></body></html>
"""


class PageSink(LiveSink):
    """Serves the newest RGBA frame to the page on host:port (port 0: any free one; `url` once prepared)."""

    name = "page"

    def __init__(self, host: str = "127.0.0.1", port: int = 8765):
        self.host, self.port = host, port
        self.server = None
        self._condition = threading.Condition()
        self._frame: Optional[bytes] = None
        self._index = -1
        self._session = None

    @property
    def url(self) -> str:
        return url_of(self.server)

    def prepare(self) -> None:
        if self.server is None:
            self.server = bind_handler(self._handler(), self.port, self.host)

    def open(self, size, fps, session) -> None:
        super().open(size, fps, session)
        self._session = session
        threading.Thread(target=self.server.serve_forever, name="rvm-live-page", daemon=True).start()
        log.info("page of the matte at %s (OBS: add a Browser Source with this URL + ?clean, %dx%d)",
                 self.url, *size)

    def write(self, matted: Matted) -> None:
        frame = to_uint8_hwc(rendered("rgba", matted.chunk, self.size)).tobytes()
        with self._condition:
            self._frame, self._index = frame, self._index + 1
            self._condition.notify_all()

    def newest(self, after: int, timeout: float):
        """(index, RGBA bytes) of a frame newer than `after`, or None after `timeout`."""
        with self._condition:
            self._condition.wait_for(lambda: self._index > after, timeout)
            return (self._index, self._frame) if self._index > after else None

    def close(self) -> None:
        self.release()

    def release(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            if self._session is not None:
                server.shutdown()
            server.server_close()

    def _handler(self):
        sink = self

        class Handler(Guarded, BaseHTTPRequestHandler):
            def do_GET(self):
                if self.refused():
                    return
                url = urlparse(self.path)
                if url.path in ("/", "/index.html"):
                    self._send(PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/stats" and sink._session is not None:
                    self._send(json.dumps(sink._session.stats()).encode(), "application/json")
                elif url.path == "/frame":
                    after = _int(parse_qs(url.query).get("after", ["-1"])[0])
                    found = sink.newest(after, LONG_POLL_S)
                    if found is None:
                        self.send_response(HTTPStatus.NO_CONTENT)
                        self.end_headers()
                        return
                    index, frame = found
                    self._send(frame, "application/octet-stream",
                               {"X-Width": sink.size[0], "X-Height": sink.size[1], "X-Frame": index})
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def do_POST(self):
                if self.refused():
                    return
                url = urlparse(self.path)
                if sink._session is None:
                    self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
                elif url.path == "/reset":
                    sink._session.reset()
                    self._send(b"{}", "application/json")
                elif url.path == "/ratio":
                    try:
                        sink._session.set_ratio(parse_qs(url.query).get("value", ["auto"])[0])
                    except (UsageError, ValueError) as error:
                        self.send_error(HTTPStatus.BAD_REQUEST, str(error))
                        return
                    self._send(b"{}", "application/json")
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def _send(self, body: bytes, kind: str, headers=None):
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for key, value in (headers or {}).items():
                    self.send_header(key, str(value))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                log.debug("%s %s", self.address_string(), format % args)

        return Handler


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1

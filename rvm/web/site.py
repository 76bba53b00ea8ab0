"""`rvm web`: a self-contained folder holding a page that mattes camera or video in the browser with exported
TF.js and ONNX artifacts, and a local server for it.

The page's sources are `rvm/web/page/` (index.html, app.js, style.css); its engines, TF.js and onnxruntime-web,
come from that folder's own npm dependencies (`make install` installs them in a checkout; a wheel carries none, and
the error names the `npm ci --prefix` command) and are copied into the built folder's vendor/, so the page needs
no network. The folder is written under a temporary name and renamed when complete.
"""
import errno
import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

from rvm import formats
from rvm.contracts import ONNX_INPUTS, TF_INPUTS, TF_OUTPUTS
from rvm.errors import MissingNodePackages, UsageError
from rvm.web.guard import Guarded

log = logging.getLogger(__name__)
WEBAPP_DIR = Path(__file__).resolve().with_name("page")
PAGE_FILES = ("index.html", "app.js", "style.css")
MODULES = WEBAPP_DIR / "node_modules"
# what each engine needs in vendor/, from the page's npm dependencies
VENDOR_FILES: Dict[str, Sequence[str]] = {
    "tfjs": (
        "@tensorflow/tfjs/dist/tf.min.js",
        "@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js",
        "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
    ),
    "onnx": (
        "onnxruntime-web/dist/ort.wasm.min.js",
        "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
        "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
        "onnxruntime-web/dist/ort.webgpu.min.js",
        "onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.mjs",
        "onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.wasm",
    ),
}
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class WebModel:
    path: Path  # the TF.js folder or the .onnx file
    engine: str  # "tfjs" or "onnx"

    @property
    def name(self) -> str:
        return self.path.stem if self.engine == "onnx" else self.path.name

    @property
    def url(self) -> str:
        return f"models/{self.name}/{formats.TFJS_MODEL_FILE}" if self.engine == "tfjs" else f"models/{self.name}.onnx"


def find_model(path) -> WebModel:
    """A TF.js graph model folder (or its model.json) or an fp32 .onnx file with the RVM contract's I/O."""
    path = Path(path)
    if path.name == formats.TFJS_MODEL_FILE and path.is_file():
        path = path.parent
    found = formats.detect(path) if path.exists() else None
    if found is not None and found.name == "tfjs" and (path / formats.TFJS_MODEL_FILE).is_file():
        check_tfjs(path / formats.TFJS_MODEL_FILE)
        return WebModel(path, "tfjs")
    if found is not None and found.name == "onnx" and path.is_file():
        check_onnx(path)
        return WebModel(path, "onnx")
    if not path.exists():
        raise UsageError(f"no model at {path}: pass a TF.js model folder (rvm export --format tfjs) or an .onnx file")
    raise UsageError(f"{path} is not a TF.js model folder (holding {formats.TFJS_MODEL_FILE}) nor an .onnx file: "
                     f"export one with `rvm export --format tfjs` or `--format onnx`")


def check_tfjs(model_json: Path) -> None:
    try:
        model = json.loads(model_json.read_text())
        inputs, outputs = set(model["signature"]["inputs"]), set(model["signature"]["outputs"])
        model["weightsManifest"]
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{model_json} is not a TF.js graph model ({type(error).__name__}: {error}): export one "
                       f"with `rvm export --format tfjs`") from None
    missing = [name for name in TF_INPUTS if name not in inputs] + [name for name in TF_OUTPUTS if name not in outputs]
    if missing:
        raise UsageError(f"{model_json} is not an RVM TF.js model: its signature lacks {', '.join(missing)}")


def check_onnx(path: Path) -> None:
    try:
        import onnx
    except ImportError:  # without the onnx package only the suffix is checked; the page reports load errors
        return
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # onnx raises DecodeError and others from protobuf
        raise UsageError(f"{path} is not a readable ONNX model ({type(error).__name__}): export one with "
                       f"`rvm export --format onnx`") from None
    inputs = [value.name for value in graph.input]
    if inputs != list(ONNX_INPUTS):
        raise UsageError(f"{path} is not an RVM ONNX model: its inputs are {inputs}, expected {list(ONNX_INPUTS)}")
    if graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise UsageError(f"{path} takes fp16 input, which the page does not feed: use the fp32 ONNX export "
                       f"(`rvm export --format onnx --precision fp32`)")


def vendor_files(engines: Iterable[str]) -> List[Path]:
    files = [MODULES / name for engine in sorted(set(engines)) for name in VENDOR_FILES[engine]]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise MissingNodePackages("the page's engines (TF.js, onnxruntime-web)", WEBAPP_DIR, missing[0])
    return files


def build(models: Sequence, output, overwrite: bool = False) -> Path:
    """Write the page, its engines and copies of `models` into the folder `output`; returns it."""
    if not models:
        raise UsageError("no model given: pass one or more TF.js model folders or .onnx files")
    found = [find_model(path) for path in models]
    names = [model.name for model in found]
    if len(set(names)) != len(names):
        raise UsageError(f"two models share a name ({', '.join(names)}): the page lists them by name")
    files = vendor_files(model.engine for model in found)
    output = Path(output)
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists: pass --overwrite to replace it, or choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{output.name}-", dir=output.parent))
    try:
        for name in PAGE_FILES:
            shutil.copyfile(WEBAPP_DIR / name, temporary / name)
        (temporary / "vendor").mkdir()
        for file in files:
            shutil.copyfile(file, temporary / "vendor" / file.name)
        for model in found:
            target = temporary / model.url
            if model.engine == "tfjs":
                shutil.copytree(model.path, target.parent)
            else:
                target.parent.mkdir(exist_ok=True)
                shutil.copyfile(model.path, target)
        listing = [{"name": model.name, "engine": model.engine, "url": model.url} for model in found]
        (temporary / "models.json").write_text(json.dumps(listing, indent=2))
        replace(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    log.debug("built %s: %s", output, ", ".join(names))
    return output


def replace(temporary: Path, output: Path) -> None:
    """Rename the finished folder into place; an old one is moved aside first and removed after."""
    if not output.exists():
        os.replace(temporary, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".old-{output.name}-", dir=output.parent))
    os.replace(output, old / output.name)
    os.replace(temporary, output)
    shutil.rmtree(old, ignore_errors=True)


class PageHandler(Guarded, SimpleHTTPRequestHandler):
    """Static files; cross-origin isolation lets the wasm engines run multi-threaded (SharedArrayBuffer). Requests
    naming another host are refused (rvm.web.guard)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript"}

    def do_GET(self):
        if not self.refused():
            super().do_GET()

    def do_HEAD(self):
        if not self.refused():
            super().do_HEAD()

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)


def make_server(folder, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server for a folder built by `build` on host:port (port 0: any free one); call serve_forever() on it."""
    if not (Path(folder) / "models.json").is_file():
        raise UsageError(f"{folder} is not a page built by `rvm web`: build it with `rvm web MODEL... -o {folder}`")
    return bind(folder, port, host)


def bind(folder, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    return bind_handler(functools.partial(PageHandler, directory=str(Path(folder).resolve())), port, host)


def bind_handler(handler, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server of `handler` on host:port; a port in use is a UsageError naming --port."""
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use: pick another with --port "
                             "(0 picks a free one)") from None
        raise


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"

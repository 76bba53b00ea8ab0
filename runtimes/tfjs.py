"""TF.js graph models run in real TF.js: one long-lived Node process per runtime (tfjs_runner/runner.js).

Frames go to Node as float32 NHWC over stdin and fgr/pha come back over stdout (framing described in
runner.js). The recurrent state stays inside Node as tf tensors; the native state held here is only the
generation number Node gave it, so a frame costs one frame's bytes each way.
"""
import collections
import json
import logging
import shutil
import struct
import subprocess
import threading
import weakref
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from rvm.errors import ArtifactError, BackendError, BackendUnavailable, MissingNodePackages, UsageError, brief
from rvm.formats import TFJS_MODEL_FILE
from rvm.metadata import METADATA_FILE, ArtifactMetadata

from .base import Runtime, RuntimeInfo

log = logging.getLogger(__name__)
RUNNER_DIR = Path(__file__).resolve().with_name("tfjs_runner")
RUNNER = RUNNER_DIR / "runner.js"
# wasm runs the RVM graph ~10x faster than the pure-JS cpu backend (37 vs 443 ms at 162x92, 0.8 vs 6.9 s
# at 1280x720, Node 20, TF.js 4.22) with the same results to 1e-6
TFJS_BACKENDS = ("wasm", "cpu")


class TfjsError(BackendError):
    """TF.js (Node) refused or failed a request; the message carries Node's own."""


def find_model_json(path) -> Path:
    path = Path(path)
    model_json = path / TFJS_MODEL_FILE if path.is_dir() else path
    if not model_json.is_file():
        raise ArtifactError(f"no TF.js model at {path}: pass a {TFJS_MODEL_FILE} file or the folder holding it")
    return model_json


def check_model_json(model_json: Path) -> None:
    """A graph model's model.json parses and every weight shard it lists is there: checked here, before Node
    starts, so a bad artifact is reported by the load, not by a later frame."""
    try:
        model = json.loads(model_json.read_text())
        model["modelTopology"]
        shards = [shard for group in model["weightsManifest"] for shard in group["paths"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{model_json} is not a TF.js graph model.json ({brief(error)}): expected modelTopology "
                            f"and a weightsManifest") from error
    missing = [shard for shard in shards if not (model_json.parent / shard).is_file()]
    if missing:
        raise ArtifactError(f"{model_json} lists weight shards that are not beside it: {', '.join(missing[:3])}"
                            f"{' ...' if len(missing) > 3 else ''}")


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise BackendUnavailable("the TF.js runtime needs Node.js: install Node.js 18+ (with npm) so that `node` "
                                 "is on PATH")
    check_runner_packages()
    return node


def check_runner_packages() -> None:
    """Raise MissingNodePackages, naming the install command, unless the Node runner's npm packages are there."""
    if not (RUNNER_DIR / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        raise MissingNodePackages("the TF.js runtime's Node runner", RUNNER_DIR)


class NodeRunner:
    """The Node process and the request/answer framing with it; one request at a time."""

    def __init__(self, model_json: Path, tfjs_backend: str = "wasm"):
        # Node runs in RUNNER_DIR (where its node_modules are): a path relative to the user's folder would point
        # nowhere there, so it gets the absolute one; messages keep the path as the user gave it
        self.process = subprocess.Popen([find_node(), str(RUNNER), str(Path(model_json).resolve()), "--backend",
                                         tfjs_backend],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        cwd=RUNNER_DIR)
        self._stderr = collections.deque(maxlen=20)  # the tail, to explain a crash
        # the thread must not hold self, or a dropped runtime would never be collected
        threading.Thread(target=drain, args=(self.process.stderr, self._stderr), daemon=True).start()
        self._lock = threading.Lock()
        # ends the process even when the runtime is dropped without close()
        self._finalizer = weakref.finalize(self, stop_process, self.process)
        self.hello = self._read()[0]
        if not self.hello.get("ok"):
            self.close()
            reason = " ".join(str(self.hello.get("error")).split())[:200]
            if self.hello.get("stage") == "model":  # Node and TF.js work: the artifact is what failed
                raise ArtifactError(f"{model_json} is not a TF.js graph model TF.js can load: {reason}")
            raise TfjsError(f"TF.js could not load {model_json}: {reason}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def request(self, header: dict, arrays: Sequence[np.ndarray] = ()) -> Tuple[dict, List[np.ndarray]]:
        arrays = [np.ascontiguousarray(a, dtype="<f4") for a in arrays]
        header = {**header, "tensors": [{"shape": list(a.shape)} for a in arrays],
                  "bytes": sum(a.nbytes for a in arrays)}
        encoded = json.dumps(header).encode()
        with self._lock:
            try:
                self.process.stdin.write(struct.pack("<I", len(encoded)) + encoded)
                for array in arrays:
                    self.process.stdin.write(memoryview(array).cast("B"))
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise self._died() from None
            answer, outputs = self._read()
        if not answer.get("ok"):
            raise TfjsError(f"TF.js {header.get('op')} failed: {answer.get('error')}")
        return answer, outputs

    def _read(self) -> Tuple[dict, List[np.ndarray]]:
        (length,) = struct.unpack("<I", self._read_exactly(4))
        answer = json.loads(self._read_exactly(length))
        outputs = []
        for tensor in answer.get("tensors", []):
            shape = tuple(tensor["shape"])
            data = self._read_exactly(4 * int(np.prod(shape, dtype=np.int64)))
            outputs.append(np.frombuffer(data, "<f4").reshape(shape))
        return answer, outputs

    def _read_exactly(self, count: int) -> bytes:
        data = self.process.stdout.read(count)
        if data is None or len(data) != count:
            raise self._died()
        return data

    def _died(self) -> TfjsError:
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = "still running"
        last = self._stderr[-1] if self._stderr else "no message"
        return TfjsError(f"the TF.js Node runner stopped answering (exit code {code}): {last}")

    def close(self) -> None:
        self._finalizer()


def drain(stderr, tail: collections.deque) -> None:
    """Keeps the runner's stderr flowing (a full pipe would block Node) and its last lines for errors."""
    for line in stderr:
        text = line.decode("utf-8", "replace").rstrip()
        if text.strip("= "):
            tail.append(text)
            log.debug("tfjs runner: %s", text)


def stop_process(process: subprocess.Popen) -> None:
    """Closing stdin asks the runner to finish; it is killed if it does not."""
    if process.poll() is None:
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream and not stream.closed:
            stream.close()


class TfjsRuntime(Runtime):
    backend = "tfjs"

    def __init__(self, path, tfjs_backend: str = "wasm", **options):
        if tfjs_backend not in TFJS_BACKENDS:
            raise UsageError(f"TF.js backend must be one of {', '.join(TFJS_BACKENDS)}, got {tfjs_backend!r}")
        model_json = find_model_json(path)
        check_model_json(model_json)
        metadata_file = model_json.with_name(METADATA_FILE)
        metadata = ArtifactMetadata.from_json(metadata_file.read_text()) if metadata_file.is_file() else None
        self.runner = NodeRunner(model_json, tfjs_backend)
        info = RuntimeInfo(self.backend, f"node-{self.runner.hello.get('backend')}",
                           metadata.precision if metadata else "int8", path=str(model_json), metadata=metadata)
        super().__init__(info, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", tfjs_backend: str = "wasm", threads: Optional[int] = None,
                  **options):
        """`threads` is accepted and ignored: the Node runner's TF.js backend picks its own."""
        if device not in ("auto", "cpu"):
            raise UsageError(f"TF.js in Node runs on the CPU here, not {device!r}: use device 'cpu' or 'auto'")
        return cls(path, tfjs_backend=tfjs_backend, **options)

    @property
    def pid(self) -> int:
        """The Node process serving this runtime (one for its whole life)."""
        return self.runner.pid

    def _run(self, src: np.ndarray, state: Optional[int], downsample_ratio: float):
        answer, (fgr, pha) = self.runner.request(
            {"op": "run", "ratio": float(downsample_ratio), "state": state}, [src.transpose(0, 2, 3, 1)])
        return fgr.transpose(0, 3, 1, 2), pha.transpose(0, 3, 1, 2), answer["generation"]

    def _state_to_numpy(self, state: int) -> List[np.ndarray]:
        _, arrays = self.runner.request({"op": "get_state", "state": state})
        return [a.transpose(0, 3, 1, 2) for a in arrays]

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]) -> int:
        answer, _ = self.runner.request({"op": "set_state"}, [np.asarray(a).transpose(0, 2, 3, 1) for a in arrays])
        return answer["generation"]

    def close(self) -> None:
        self.runner.close()

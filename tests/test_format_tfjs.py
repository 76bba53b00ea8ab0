"""TF.js export in each precision (mixed, int8, fp16 weight storage) run in real TF.js under Node: through
TfjsRuntime and as web code calls it. Each precision is exported once per session."""
import fnmatch
import gc
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

# tensorflowjs imports tensorflow_decision_forests, whose welcome banner imports IPython when stdout is
# captured (as under pytest): without IPython the import fails unless the banner is off
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
pytest.importorskip("tensorflowjs")
if shutil.which("node") is None:
    pytest.skip("Node.js (`node`) is not on PATH: TF.js models cannot be run here", allow_module_level=True)

import rvm.runtimes.tfjs as tfjs_runtime  # noqa: E402
from rvm import formats  # noqa: E402
from rvm.compare import compare  # noqa: E402
from rvm.errors import MissingNodePackages, UsageError  # noqa: E402
from rvm.exporters import ExportOptions, export  # noqa: E402
from rvm.exporters.tfjs import QUANTIZATION  # noqa: E402
from rvm.media.samples import validation_frames  # noqa: E402
from rvm.model import MattingNetwork  # noqa: E402
from rvm.runtimes import BackendUnavailable, load  # noqa: E402
from rvm.runtimes.pytorch import PyTorchRuntime  # noqa: E402
from rvm.runtimes.tfjs import RUNNER_DIR, TfjsError, TfjsRuntime  # noqa: E402

from .conftest import CLIPS, DGF_WEIGHTS, FGF_WEIGHTS, need  # noqa: E402

# 30: over 16 frames fp16's small error (1.3e-4 mean) is still settling and reads as 2.0x drift; the full
# 58-frame measurement per clip is in docs/formats.md (TF.js precisions)
FRAMES, RATIO = 30, 0.5
PRECISIONS = formats.get("tfjs").precisions
DEFAULT = PRECISIONS[0]

# Web-style client: serves the model folder over HTTP, loads it by URL and runs three recurrent frames of
# random input with `tf.tensor(0.)` states and named outputs, exactly as a web page would.
WEB_CLIENT = r"""
const http = require('http'), fs = require('fs'), path = require('path');
const tf = require('@tensorflow/tfjs');
const folder = process.argv[2];
const server = http.createServer((req, res) => fs.readFile(path.join(folder, path.basename(req.url)),
  (err, data) => { if (err) { res.writeHead(404); res.end(); } else { res.end(data); } }));
server.listen(0, '127.0.0.1', async () => {
  try {
    const model = await tf.loadGraphModel(`http://127.0.0.1:${server.address().port}/model.json`);
    let [r1i, r2i, r3i, r4i] = [tf.tensor(0.), tf.tensor(0.), tf.tensor(0.), tf.tensor(0.)];
    const downsample_ratio = tf.tensor(0.5);
    const src = tf.randomUniform([1, 92, 162, 3]);
    const frames = [];
    for (let i = 0; i < 3; i++) {
      const [fgr, pha, ...rec] = await model.executeAsync(
        {src, r1i, r2i, r3i, r4i, downsample_ratio}, ['fgr', 'pha', 'r1o', 'r2o', 'r3o', 'r4o']);
      tf.dispose([r1i, r2i, r3i, r4i]);
      [r1i, r2i, r3i, r4i] = rec;
      frames.push({fgr: fgr.shape, pha: pha.shape, rec: rec.map((t) => t.shape),
                   pha_min: pha.min().dataSync()[0], pha_max: pha.max().dataSync()[0]});
    }
    process.stdout.write(JSON.stringify(frames));
  } catch (error) { console.error(error.message); process.exitCode = 1; }
  server.close();
});
"""


def load_model(refiner: str, weights: Path) -> MattingNetwork:
    net = MattingNetwork("mobilenetv3", refiner)
    # neither real weight set carries the segmentation head, which matting never uses
    missing = net.load_state_dict(torch.load(need(weights), map_location="cpu"), strict=False).missing_keys
    assert all(key.startswith("project_seg.") for key in missing)
    return net.eval()


def export_tfjs(model, store, precision: str = DEFAULT, frames: int = 4) -> Path:
    if not (RUNNER_DIR / "node_modules").is_dir():
        pytest.skip(f"TF.js is not installed for the Node runner: run `npm ci` in {RUNNER_DIR}")
    # the store validates in TF.js on the clip; the longer comparison is below
    options = ExportOptions(validation_clip=str(need(CLIPS / "person_a.mp4")), validation_frames=frames)
    return store.get(model, "tfjs", precision, options)


@pytest.fixture(scope="session")
def model():
    return load_model("deep_guided_filter", DGF_WEIGHTS)


@pytest.fixture(scope="session")
def artifacts(model, store):
    """precision -> artifact, from the run's store (each exported once per run)."""
    return lambda precision: export_tfjs(model, store, precision)


@pytest.fixture(scope="session")
def artifact(artifacts) -> Path:
    return artifacts(DEFAULT)


@pytest.fixture(scope="session")
def frames():
    # the clip upscaled 2x, as export validation uses it: at 162x92 and ratio 0.5 the matte is empty
    return validation_frames(FRAMES, need(CLIPS / "person_a.mp4"))


def weight_entries(artifact: Path) -> list:
    model_json = json.loads((artifact / "model.json").read_text())
    return [w for group in model_json["weightsManifest"] for w in group["weights"] if w["dtype"] == "float32"]


def weights_bytes(artifact: Path) -> int:
    return sum(p.stat().st_size for p in artifact.glob("*.bin"))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_artifact_layout(artifacts, precision):
    artifact = artifacts(precision)
    assert artifact.name == f"rvm_mobilenetv3_tfjs_{precision}"
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".tmp-")], "temporary files left behind"
    model_json = json.loads((artifact / "model.json").read_text())
    assert set(model_json["signature"]["inputs"]) == {"src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"}
    assert set(model_json["signature"]["outputs"]) == {"fgr", "pha", "r1o", "r2o", "r3o", "r4o"}
    ops = {node["op"] for node in model_json["modelTopology"]["node"]}
    assert not any("Fused" in op and "Hardswish" in op for op in ops), "oneDNN fused an op TF.js lacks"
    metadata = json.loads((artifact / "rvm_metadata.json").read_text())
    assert metadata["format"] == "tfjs" and metadata["precision"] == precision
    assert metadata["refiner"] == "deep_guided_filter" and metadata["tensorflowjs_version"]
    with load(artifact) as runtime:  # read back typed
        assert runtime.info.metadata.precision == precision and runtime.info.metadata.versions["tensorflowjs"]
    # every float weight is stored as the precision says
    stored = {w["name"]: w.get("quantization", {}).get("dtype", "float32") for w in weight_entries(artifact)}
    dtypes = QUANTIZATION[precision]
    fallthrough = next(dtype for dtype, patterns in dtypes.items() if patterns is True)
    named = {dtype: patterns for dtype, patterns in dtypes.items() if patterns is not True}
    expected = {name: next((dtype for dtype, patterns in named.items()
                            if any(fnmatch.fnmatch(name, p) for p in patterns)), fallthrough) for name in stored}
    assert stored == expected
    assert all(any(fnmatch.filter(stored, p) for p in patterns) for patterns in named.values()), \
        "a pattern matches no weight"


def test_mixed_storage_costs_at_most_twice_uint8(artifacts):
    """The mixed artifact keeps most weights uint8: the issue's bar is at most twice the all-uint8 size."""
    mixed, uint8, fp16 = (weights_bytes(artifacts(p)) for p in ("mixed", "int8", "fp16"))
    print(f"TF.js weights: mixed {mixed} B, int8 {uint8} B, fp16 {fp16} B")
    assert uint8 < mixed <= 2 * uint8
    assert 1.9 * uint8 < fp16 < 2.1 * uint8


@pytest.mark.parametrize("precision", PRECISIONS)
def test_matches_pytorch_over_recurrent_frames(model, artifacts, frames, precision):
    with load(artifacts(precision)) as runtime:
        assert isinstance(runtime, TfjsRuntime) and runtime.info.precision == precision
        pid = runtime.pid
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, frames, RATIO)
        # one Node process serves every frame
        assert runtime.pid == pid and runtime.runner.process.poll() is None
    print(f"tfjs {precision} vs pytorch over {result.frames} frames: alpha max {result.pha_max:.3e} mean "
          f"{result.pha_mean:.3e}, foreground max {result.fgr_max:.3e} mean {result.fgr_mean:.3e}")
    assert result.frames == FRAMES
    assert not result.failures(formats.get("tfjs").tolerance(precision)), result
    # stored weights do change the output: a zero error would mean PyTorch was compared with itself
    assert result.pha_mean > 1e-7
    assert runtime.runner.process.poll() is not None, "close() must end the Node process"


class StateResetEveryFrame:
    """A broken deployment: the runtime's recurrent state dropped before every frame."""

    def __init__(self, runtime):
        self.runtime = runtime

    def reset(self):
        self.runtime.reset()

    def step(self, frame, ratio):
        self.runtime.reset()
        return self.runtime.step(frame, ratio)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tolerances_reject_an_artifact_run_without_its_state(model, artifacts, frames, precision):
    with load(artifacts(precision)) as runtime:
        result = compare(PyTorchRuntime(model, device="cpu"), StateResetEveryFrame(runtime), frames, RATIO)
    assert result.failures(formats.get("tfjs").tolerance(precision)), result


def test_fast_guided_filter_runs_in_tfjs(store):
    """tensorflowjs fuses the box filter's depthwise convolution with a tensor "bias", which TF.js refuses;
    the exporter splits it back. The FGF weights are the official TF.js ones, so uint8 costs little."""
    # int8: these weights came out of the uint8 official model (in mixed, alpha max 0.27 over 4 frames: the fast
    # guided filter's eps amplifies the float16 rounding of weights tuned on the uint8 grid)
    artifact = export_tfjs(load_model("fast_guided_filter", FGF_WEIGHTS), store, "int8")
    nodes = json.loads((artifact / "model.json").read_text())["modelTopology"]["node"]
    constants = {node["name"] for node in nodes if node["op"] == "Const"}
    fused = [node for node in nodes if node["op"] in ("FusedDepthwiseConv2dNative", "_FusedConv2D")]
    assert fused and all(name in constants for node in fused for name in node["input"][2:])


def test_state_round_trip(artifact, frames):
    with TfjsRuntime.from_path(artifact, downsample_ratio=RATIO) as runtime:
        for frame in frames[:3]:
            runtime.step(frame)
        saved = runtime.state
        assert [s.shape[1] for s in saved] == [16, 20, 40, 64]
        expected = runtime.step(frames[3])["pha"]
        runtime.state = saved
        np.testing.assert_array_equal(runtime.step(frames[3])["pha"], expected)


def test_plain_node_client_with_named_outputs(artifact, tmp_path):
    script = tmp_path / "web_client.js"
    script.write_text(WEB_CLIENT)
    done = subprocess.run([shutil.which("node"), str(script), str(artifact)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NODE_PATH": str(RUNNER_DIR / "node_modules")})
    assert done.returncode == 0, done.stderr
    for frame in json.loads(done.stdout):
        assert frame["fgr"] == [1, 92, 162, 3] and frame["pha"] == [1, 92, 162, 1]
        assert [shape[-1] for shape in frame["rec"]] == [16, 20, 40, 64]
        assert 0 <= frame["pha_min"] <= frame["pha_max"] <= 1


def test_dropped_runtime_ends_its_node_process(artifact):
    runtime = TfjsRuntime.from_path(artifact)
    process = runtime.runner.process
    del runtime
    gc.collect()
    assert process.wait(timeout=10) is not None


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="no TF.js model at .*pass a model.json"):
        TfjsRuntime.from_path(tmp_path / "nowhere")


def test_missing_node_or_packages_is_backend_unavailable(artifact, monkeypatch, tmp_path):
    monkeypatch.setattr(tfjs_runtime.shutil, "which", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"needs Node.js: install Node.js 18\+"):
        TfjsRuntime.from_path(artifact)
    monkeypatch.undo()
    runner = tmp_path / "installed runner"  # the command quotes a path with a space
    monkeypatch.setattr(tfjs_runtime, "RUNNER_DIR", runner)
    with pytest.raises(MissingNodePackages) as error:
        TfjsRuntime.from_path(artifact)
    assert f"run `npm ci --prefix '{runner}'`" in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, BackendUnavailable) and isinstance(error.value, UsageError)  # exit 2


def test_relative_model_path_is_found(artifact, monkeypatch):
    """The runner runs in its own folder: a path relative to the caller's must reach it resolved."""
    monkeypatch.chdir(artifact.parent)
    with TfjsRuntime.from_path(Path(artifact.name)) as runtime:
        assert runtime.step(np.zeros((3, 32, 32), np.float32))["pha"].shape == (1, 32, 32)


def test_node_error_comes_back_as_one_line(artifact):
    with TfjsRuntime.from_path(artifact) as runtime:
        with pytest.raises(TfjsError, match="TF.js run failed: state generation 7 is stale"):
            runtime._run(np.zeros((1, 3, 16, 16), np.float32), 7, 0.5)
        assert runtime.step(np.zeros((3, 32, 32), np.float32))["pha"].shape == (1, 32, 32)


def test_fp32_request_is_refused_before_any_work(model, tmp_path):
    with pytest.raises(UsageError, match="tfjs cannot be exported in fp32: it supports mixed, int8, fp16"):
        export(model, "tfjs", "fp32", tmp_path)
    assert list(tmp_path.iterdir()) == []

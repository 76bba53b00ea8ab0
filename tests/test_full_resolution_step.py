"""The guided filter's full-resolution step fused in one pass (`runtimes/full_resolution.py`) and ONNX Runtime
running our graphs without their last full-resolution operators: the kernel against PyTorch's own step at sizes
whose upsampling factor is not a whole number, edges and a batch; the fused runtime against the same artifact run
whole (dynamic, static and int8 graphs, the state carried); the graph check that decides what may be fused, shown
to refuse the official download and a graph whose step was changed."""
import numpy as np
import pytest
import torch

pytest.importorskip("numba", reason="numba is not installed: pip install 'rvm-toolkit[onnx]'")
onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'rvm-toolkit[onnx]'")

from rvm.errors import UsageError  # noqa: E402
from rvm.formats import ExportOptions  # noqa: E402
from rvm.model.refiners import apply_coefficients  # noqa: E402
from rvm.runtimes import load  # noqa: E402
from rvm.runtimes.full_resolution import FusedFullResolutionStep  # noqa: E402
from rvm.runtimes.onnxruntime import full_resolution_coefficients  # noqa: E402

from .artifact_helpers import STATIC, STATIC_RATIO, calibration  # noqa: E402
from .conftest import OFFICIAL_ONNX, need  # noqa: E402

FUSED_MAX_ERROR = 2e-6  # against the graph in ONNX Runtime: the same arithmetic in another order
PYTORCH_MAX_ERROR = 1e-4  # against PyTorch, which samples at positions rounded otherwise: the fp32 parity bound


@pytest.mark.parametrize("batch, low, full", [
    (1, (46, 81), (184, 324)),  # ratio 0.25 of 324x184: factor 4 and not quite 4 along the width
    (2, (69, 121), (184, 324)),  # ratio 0.375: a factor of 2.67, batch of two
    (1, (1, 1), (5, 7)),  # one coefficient pixel: every output samples the edge
    (1, (30, 40), (30, 40)),  # factor 1: the step without upsampling
    (1, (3, 40), (1, 80)),  # one output row: half-pixel sampling puts it mid-input, not at the edge
])
def test_kernel_matches_pytorchs_step(batch, low, full):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(batch, 4, *low, generator=generator)
    b = torch.randn(batch, 4, *low, generator=generator)
    src = torch.rand(batch, 3, *full, generator=generator)
    fgr, pha = apply_coefficients(a, b, src)  # adds the identity to a's colour channels, as the graph does
    a_plus = a + torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 4, 1, 1)
    step = FusedFullResolutionStep(threads=2)
    fused_fgr, fused_pha = step(a_plus.numpy(), b.numpy(), src.numpy())
    step.close()
    assert fused_fgr.shape == tuple(fgr.shape) and fused_pha.shape == tuple(pha.shape)
    assert np.abs(fused_fgr - fgr.numpy()).max() <= PYTORCH_MAX_ERROR
    assert np.abs(fused_pha - pha.numpy()).max() <= PYTORCH_MAX_ERROR
    outputs = np.concatenate([fused_fgr.ravel(), fused_pha.ravel()])
    assert (outputs == 0).any() and (outputs == 1).any() and ((0 < outputs) & (outputs < 1)).any()  # both clamps


def test_outputs_a_caller_holds_are_never_written_again():
    """Each frame's outputs reuse memory only from outputs nothing refers to any more: not while the caller holds
    the array, a view of it, or a tensor made from it; once all are dropped, the next frame reuses it."""
    rng = np.random.default_rng(0)
    frames = [(rng.standard_normal((1, 4, 9, 16), np.float32), rng.standard_normal((1, 4, 9, 16), np.float32),
               rng.random((1, 3, 36, 64), np.float32)) for _ in range(5)]
    step = FusedFullResolutionStep(threads=2)
    kept_fgr, _ = step(*frames[0])
    kept_view = step(*frames[1])[1][0, 0, 3:]
    kept_tensor = torch.from_numpy(step(*frames[2])[0])
    held = [kept_fgr.copy(), kept_view.copy(), kept_tensor.numpy().copy()]
    fgr, pha = step(*frames[3])
    assert all(fgr is not o and pha is not o for o in (kept_fgr, kept_view.base, kept_tensor.numpy()))
    assert all(np.array_equal(a, b) for a, b in zip((kept_fgr, kept_view, kept_tensor.numpy()), held))
    reused = id(fgr), id(pha)
    del fgr, pha
    fgr, pha = step(*frames[4])
    assert (id(fgr), id(pha)) == reused  # dropped: its memory serves the next frame
    fresh = FusedFullResolutionStep(threads=1)(*frames[4])
    assert np.array_equal(fgr, fresh[0]) and np.array_equal(pha, fresh[1])
    step.close()


@pytest.fixture(scope="module")
def artifacts(model, store):
    return {"dynamic": store.get(model, "onnx", "fp32", ExportOptions(validate=False)),
            "static": store.get(model, "onnx", "fp32", ExportOptions(**STATIC, static=True, validate=False)),
            "static int8": store.get(model, "onnx", "int8", ExportOptions(**STATIC, static=True, validate=False,
                                                                          calibration=calibration()))}


@pytest.mark.parametrize("kind", ["dynamic", "static", "static int8"])
def test_fused_runtime_matches_the_graph_run_whole(artifacts, stateless_clip, kind):
    fused = load(artifacts[kind], device="cpu", full_resolution_step="fused")
    whole = load(artifacts[kind], device="cpu", full_resolution_step="graph")
    assert fused.full_resolution_step is not None and whole.full_resolution_step is None
    assert len(fused.session.get_outputs()) == len(whole.session.get_outputs())  # a, b instead of fgr, pha
    ratios = [STATIC_RATIO] if kind != "dynamic" else [0.5, 0.375]
    for ratio in ratios:
        fused.reset()
        whole.reset()
        for frame in stateless_clip[:4]:
            x = np.moveaxis(frame, -1, 0)[None].astype(np.float32) / 255
            got, expected = fused.run_nchw(x, ratio), whole.run_nchw(x, ratio)
            for name, mine, theirs in zip(("fgr", "pha"), got, expected):
                assert np.abs(mine - theirs).max() <= FUSED_MAX_ERROR, (kind, ratio, name)
        np.testing.assert_array_equal(fused.state[0], whole.state[0])  # the state is the session's, unchanged
    fused.close()


def test_auto_fuses_ours_and_runs_the_official_download_whole(artifacts):
    assert load(artifacts["dynamic"], device="cpu").full_resolution_step is not None
    official = need(OFFICIAL_ONNX)
    assert full_resolution_coefficients(onnx.load(str(official))) is None
    assert load(official, device="cpu").full_resolution_step is None
    with pytest.raises(UsageError, match="nothing to fuse; use full_resolution_step='graph'") as error:
        load(official, device="cpu", full_resolution_step="fused")
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="must be one of auto, fused, graph"):
        load(artifacts["dynamic"], device="cpu", full_resolution_step="fast")


def test_the_check_refuses_a_step_that_computes_something_else(artifacts):
    """What is fused must be what the graph computes: the same graph with its clamp's upper bound or its luma
    weights changed is not recognised, and runs whole."""
    model = onnx.load(str(artifacts["static"]))
    assert full_resolution_coefficients(model) is not None
    for change in ("clip", "luma"):
        edited = onnx.load(str(artifacts["static"]))
        producer = {output: node for node in edited.graph.node for output in node.output}
        clip = producer[producer["fgr"].input[0]]
        add = producer[clip.input[0]]
        multiply = next(producer[name] for name in add.input if producer[name].op_type == "Mul")
        guide = next(producer[name] for name in multiply.input if producer[name].op_type == "Reshape")
        target = clip.input[2] if change == "clip" else producer[guide.input[0]].input[0]
        values = {t.name: t for t in edited.graph.initializer}
        constant = values.get(target)
        if constant is None:  # a Constant node's value
            constant = producer[target].attribute[0].t
        array = onnx.numpy_helper.to_array(constant) * np.float32(0.9)
        constant.CopyFrom(onnx.numpy_helper.from_array(array, constant.name))
        assert full_resolution_coefficients(edited) is None, change

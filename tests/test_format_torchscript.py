"""TorchScript export end to end: exported through `exporters.export`, reloaded with plain `torch.jit.load`
as third-party code would, run over 30 recurrent frames of a real clip and compared with PyTorch."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from rvm import formats
from rvm.exporters import ExportOptions, export
from rvm.metadata import ArtifactMetadata
from rvm.runtimes import load
from rvm.runtimes.torchscript import TorchScriptRuntime

from .conftest import RATIO, max_errors

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@pytest.fixture(scope="module")
def artifacts(model, store):
    """Each precision from the run's store, validated on a few frames (the tests below run 30)."""
    return {p: store.get(model, "torchscript", p, ExportOptions(validation_frames=3)) for p in DTYPES}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plain_jit_load_matches_pytorch_over_recurrent_frames(artifacts, frames, reference, precision):
    path = artifacts[precision]
    assert path.name == f"rvm_mobilenetv3_{precision}.torchscript"
    module = torch.jit.load(str(path)).eval()
    rec, outputs = [None] * 4, []
    with torch.inference_mode():
        for frame in frames:
            fgr, pha, *rec = module(torch.from_numpy(frame).to(DTYPES[precision]), *rec, RATIO)
            assert fgr.dtype == pha.dtype == DTYPES[precision]
            outputs.append((fgr.float().numpy(), pha.float().numpy()))
    pha_err, fgr_err = max_errors(outputs, reference)
    bounds = formats.get("torchscript").tolerance(precision)
    pha_tol, fgr_tol = bounds.pha_max, bounds.fgr_max
    assert pha_err <= pha_tol and fgr_err <= fgr_tol, (precision, pha_err, fgr_err)
    # the ratio is a runtime argument: another ratio gives other (smaller) states
    with torch.inference_mode():
        *_, r4 = module(torch.from_numpy(frames[0]).to(DTYPES[precision]), None, None, None, None, 0.25)
    assert r4.shape[-2:] != rec[3].shape[-2:]


def test_loads_without_this_package(artifacts, tmp_path):
    """A fresh interpreter that cannot import rvm/exporters/runtimes loads and runs the file."""
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('rvm', 'exporters', 'runtimes'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        f"m = torch.jit.load({str(artifacts['fp32'])!r})\n"
        "fgr, pha, *rec = m(torch.rand(1, 3, 92, 162), None, None, None, None, 0.5)\n"
        "print(tuple(pha.shape), len(rec))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1, 92, 162) 4"


def test_time_series_input_matches_frame_by_frame(artifacts, frames):
    module = torch.jit.load(str(artifacts["fp32"])).eval()
    clip = torch.from_numpy(np.concatenate(frames[:4]))  # [T,3,H,W]
    batch = torch.stack([clip, clip.flip(0)])  # [B=2,T=4,3,H,W]: two different sequences
    with torch.inference_mode():
        fgr, pha, *rec = module(batch, None, None, None, None, RATIO)
        assert fgr.shape == (2, 4, 3, 184, 324) and pha.shape == (2, 4, 1, 184, 324)
        step_rec = [None] * 4
        for t in range(4):
            _, step_pha, *step_rec = module(batch[:, t], *step_rec, RATIO)
            assert torch.allclose(pha[:, t], step_pha, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(rec, step_rec))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_metadata_extra_file_and_runtime(artifacts, frames, precision):
    extra = {"metadata.json": ""}
    torch.jit.load(str(artifacts[precision]), _extra_files=extra)
    metadata = ArtifactMetadata.from_json(extra["metadata.json"])
    assert metadata.format == "torchscript" and metadata.precision == precision
    assert metadata.variant == "mobilenetv3" and metadata.refiner == "deep_guided_filter"
    assert metadata.versions["torch"] == torch.__version__ and metadata.export_time

    runtime = load(artifacts[precision], device="cpu")
    assert isinstance(runtime, TorchScriptRuntime)
    assert runtime.info.precision == precision and runtime.info.metadata == metadata
    image = (frames[0][0].transpose(1, 2, 0) * 255).astype(np.uint8)
    out = runtime.step(image, RATIO)
    assert out["pha"].shape == (184, 324, 1) and out["pha"].dtype == np.uint8
    assert [s.shape[1] for s in runtime.state] == [16, 20, 40, 64]
    assert all(s.dtype == np.float32 for s in runtime.state)


def test_fast_guided_filter_fp16_validates(tmp_path):
    """The FGF runs in fp32 inside an fp16 model: in half precision its eps underflowed (alpha off by 1.0)."""
    from .conftest import fgf_model
    path = export(fgf_model(), "torchscript", "fp16", tmp_path, options=ExportOptions(validation_frames=4))
    assert path.name == "rvm_mobilenetv3_fp16.torchscript"

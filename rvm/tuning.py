"""Tuning records: the fastest proven artifact on this machine at an input size, per quality class.

`rvm tune` (`rvm.measure.tune`) exports every candidate this machine can run, proves each against PyTorch, benches
them side by side and writes a record into the user's cache. `Runtime.load("auto", resolution=...)` reads it
through `resolve`, which only reads records: where this machine has none for the size it raises a UsageError naming
the `rvm tune` to run. Tuning on demand (`--model auto[:exact|:fast]` in the CLI) is above this layer:
`rvm.measure.tune.tuned_model` passes `resolve` the tuner. A record belongs to a machine fingerprint (CPU model and
flags, cores, GPUs, package versions, kernel settings): when any of it changes, the old record is not used.

Quality classes: `fast` is any artifact within its own registered bounds (quantized ones included); `exact` also
keeps alpha MAD against PyTorch fp32 at most EXACT_MAD. `auto` alone means `auto:fast`.
"""
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple, Union

from rvm import machine
from rvm.contracts import auto_downsample_ratio
from rvm.errors import UsageError
from rvm.version import __version__

log = logging.getLogger(__name__)

AUTO = "auto"
QUALITIES = ("fast", "exact")  # the first is what plain `auto` picks
EXACT_MAD = 0.1  # alpha MAD x1e-3 (the paper's units): the `exact` class
SCHEMA = 1

Resolution = Tuple[int, int]
Ratio = Union[str, float, None]


def parse_auto(model) -> Optional[str]:
    """The quality class `model` asks for when it is `auto`, `auto:fast` or `auto:exact`, else None (a path)."""
    if not isinstance(model, str) or not (model == AUTO or model.startswith(AUTO + ":")):
        return None
    if os.path.exists(model):  # a file of the user's that happens to be called "auto"
        return None
    quality = model.partition(":")[2] or QUALITIES[0]
    if quality not in QUALITIES:
        raise UsageError(f"--model {model}: the quality class is one of {', '.join(QUALITIES)} "
                         f"(auto, auto:fast or auto:exact)")
    return quality


def resolve_ratio(resolution: Resolution, downsample_ratio: Ratio) -> float:
    width, height = resolution
    if downsample_ratio in (None, "auto"):
        return auto_downsample_ratio(height, width)
    return float(downsample_ratio)


def resolve_device(device: str) -> str:
    """Records are per device kind: `auto` is CUDA where torch sees a GPU, else the CPU."""
    if device != "auto":
        return device.split(":")[0]
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def fingerprint() -> dict:
    """What a record's measurements depend on: change any of it and the record is stale."""
    cpu = machine.cpu()
    gpus = machine.probe(machine.gpus)
    return {"cpu": cpu.get("model"), "flags": cpu.get("flags"), "machine": platform.machine(),
            "cores": cpu.get("usable_cores", cpu.get("logical_cores")),
            "gpus": [device.get("name") for device in gpus.get("devices", [])],
            "packages": {name: info["version"] for name, info in machine.packages().items()
                         if isinstance(info, dict) and info.get("installed")},
            "python": platform.python_version(), "rvm_toolkit": __version__,
            "settings": {name: os.environ[name] for name in machine.KERNEL_ENV_VARS if name in os.environ}}


def fingerprint_key(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def tuning_dir() -> Path:
    """Where records (and the artifacts they chose) live: the user's cache folder."""
    from rvm.checkpoints import cache_dir  # imports torch: only when a record is looked up
    return cache_dir() / "tune"


def record_name(resolution: Resolution, ratio: float, device: str) -> str:
    return f"{resolution[0]}x{resolution[1]}_r{ratio:g}_{device}"


def record_path(key: str, resolution: Resolution, ratio: float, device: str) -> Path:
    return tuning_dir() / key / f"{record_name(resolution, ratio, device)}.json"


def read_record(path: Path) -> Optional[dict]:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


def records() -> Iterator[Tuple[Path, dict]]:
    """Every readable record in the cache, newest first."""
    paths = sorted(tuning_dir().glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in paths:
        record = read_record(path)
        if record is not None:
            yield path, record


def usable(record: Optional[dict]) -> bool:
    """A record whose chosen artifacts are all still on disk."""
    return record is not None and all(Path(choice["artifact"]).exists()
                                      for choice in record.get("choice", {}).values() if choice)


def choice(record: dict, quality: str) -> Path:
    chosen = record.get("choice", {}).get(quality)
    if not chosen:
        size = "x".join(map(str, record["resolution"]))
        raise UsageError(f"the tuning record for {size} has no {quality} artifact (no candidate was proven "
                         f"{quality} here): see `rvm tune --show`, or pass --model with an artifact")
    return Path(chosen["artifact"])


def find(resolution: Resolution, downsample_ratio: Ratio = "auto", device: str = "auto"
         ) -> Tuple[Optional[dict], str, dict]:
    """(this machine's usable record for the size, or None; why there is none, for the log; the request of the
    newest record for the size, made here before or on another fingerprint, that a re-tune repeats)."""
    ratio, device = resolve_ratio(resolution, downsample_ratio), resolve_device(device)
    key = fingerprint_key(fingerprint())
    record = read_record(record_path(key, resolution, ratio, device))
    if usable(record):
        return record, "", {}
    if record is not None:
        return None, "an artifact it chose is gone", record.get("request", {})
    name = record_name(resolution, ratio, device)
    stale = next((other for path, other in records() if path.stem == name), None)
    if stale is not None:
        return None, "this machine changed since it was tuned (CPU, GPU, package versions or kernel settings)", \
            stale.get("request", {})
    return None, "this machine has not been tuned at this size", {}


def resolve(model: str, resolution: Optional[Resolution], downsample_ratio: Ratio = "auto", device: str = "auto",
            tune_missing: Optional[Callable[..., dict]] = None) -> Path:
    """The artifact `model` (`auto`, `auto:fast`, `auto:exact`) stands for at `resolution` on this machine, from its
    tuning record. Where there is no usable record, `tune_missing(resolution=, downsample_ratio=, device=, **the
    request of the last tune at that size)` makes one (the tuner lives above this layer:
    `rvm.measure.tune.tuned_model`); without it a UsageError says which `rvm tune` to run."""
    quality = parse_auto(model)
    if quality is None:
        raise ValueError(f"{model!r} is not an auto model")
    if resolution is None:
        raise UsageError(f"--model {model} picks the fastest artifact for an input size: give the size "
                         f"(Runtime.load('{model}', resolution=(width, height)))")
    resolution = (int(resolution[0]), int(resolution[1]))
    record, why, request = find(resolution, downsample_ratio, device)
    if record is None:
        size = f"{resolution[0]}x{resolution[1]}"
        if tune_missing is None:
            raise UsageError(f"no tuning record for {size}: {why}; run `rvm tune --resolution {size}`")
        log.warning("--model %s: no tuning record for %s (%s): tuning now, once (see `rvm tune`)", model, size, why)
        record = tune_missing(resolution=resolution, downsample_ratio=resolve_ratio(resolution, downsample_ratio),
                              device=resolve_device(device), **request)
    chosen = choice(record, quality)
    log.info("--model %s at %dx%d: %s", model, *resolution, chosen)
    return chosen

"""Metadata embedded in every artifact: what it is, where it came from, what made it."""
import datetime
import platform
from typing import Optional, Tuple

import rvm


def build_metadata(model, fmt: str, precision: str, framework_versions: dict,
                   downsample_ratio: Optional[float] = None,
                   resolution: Optional[Tuple[int, int]] = None) -> dict:
    info = getattr(model, "checkpoint_info", {}) or {}
    import torch
    meta = {
        "producer": "rvm-toolkit",
        "rvm_toolkit_version": rvm.__version__,
        "format": fmt,
        "variant": model.variant,
        "refiner": model.refiner_name,
        "precision": precision,
        "checkpoint": info.get("name") or info.get("path", ""),
        "checkpoint_sha256": info.get("sha256", ""),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update({f"{name}_version": version for name, version in framework_versions.items()})
    if downsample_ratio is not None:
        meta["downsample_ratio"] = downsample_ratio
    if resolution is not None:
        meta["resolution"] = f"{resolution[0]}x{resolution[1]}"
    return meta

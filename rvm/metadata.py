"""Artifact metadata, written by every exporter and read back by every runtime, with types, in one place.

Each format stores it where it can: ONNX `metadata_props` and CoreML `user_defined_metadata` (string maps:
`to_strings`/`from_strings`), TorchScript's extra file and the `rvm_metadata.json` of SavedModel/TF.js folders
(JSON: `to_json`/`from_json`). Whatever the container, `Runtime.info.metadata` is an `ArtifactMetadata`, or None
for an artifact that carries none (the official downloads).
"""
import datetime
import json
import platform
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from rvm.version import __version__

SCHEMA_VERSION = 1
PRODUCER = "rvm-toolkit"
METADATA_FILE = "rvm_metadata.json"  # inside artifact folders (SavedModel, TF.js) and beside other files
TORCHSCRIPT_METADATA_FILE = "metadata.json"  # the extra file of TorchScript archives (official ones have none)
TFLITE_METADATA_NAME = "rvm_metadata"  # the entry in a TFLite flatbuffer's metadata table


@dataclass(frozen=True)
class ArtifactMetadata:
    format: str
    variant: str
    refiner: str
    precision: str
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    downsample_ratio: Optional[float] = None  # baked into static artifacts; absent where the ratio is an input
    resolution: Optional[Tuple[int, int]] = None  # (width, height) of static artifacts
    static: bool = False
    export_time: str = ""
    versions: Dict[str, str] = field(default_factory=dict)  # package -> version of what made it
    details: Dict[str, Any] = field(default_factory=dict)  # format-specific facts (opset, container kind, ...)
    schema_version: int = SCHEMA_VERSION
    producer: str = PRODUCER

    @classmethod
    def for_export(cls, model, fmt: str, precision: str, versions: Mapping[str, str] = (), options=None,
                   **details) -> "ArtifactMetadata":
        """Metadata of an artifact being exported from `model` (a MattingNetwork) with ExportOptions `options`."""
        import torch
        info = getattr(model, "checkpoint_info", {}) or {}
        static = bool(options is not None and options.static)
        return cls(
            format=fmt, variant=model.variant, refiner=model.refiner_name, precision=precision,
            checkpoint=info.get("name") or info.get("path", ""), checkpoint_sha256=info.get("sha256", ""),
            downsample_ratio=float(options.downsample_ratio) if static else None,
            resolution=tuple(options.resolution) if static else None, static=static,
            export_time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            versions={"rvm_toolkit": __version__, "torch": torch.__version__, "python": platform.python_version(),
                      **dict(versions)},
            details=dict(details))

    # ---- flat string maps (ONNX, CoreML) ---------------------------------------------------------------------
    def to_strings(self) -> Dict[str, str]:
        """One string per key: versions as `<package>_version`, details under their own names, JSON for non-strings."""
        flat: Dict[str, Any] = {"producer": self.producer, "schema_version": self.schema_version,
                                "format": self.format, "variant": self.variant, "refiner": self.refiner,
                                "precision": self.precision, "checkpoint": self.checkpoint,
                                "checkpoint_sha256": self.checkpoint_sha256, "static": self.static,
                                "export_time": self.export_time}
        if self.downsample_ratio is not None:
            flat["downsample_ratio"] = self.downsample_ratio
        if self.resolution is not None:
            flat["resolution"] = "{}x{}".format(*self.resolution)
        flat.update({f"{name}_version": version for name, version in self.versions.items()})
        flat.update(self.details)
        return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flat.items()}

    @classmethod
    def from_strings(cls, props: Mapping[str, str]) -> Optional["ArtifactMetadata"]:
        """The metadata in a string map, or None when it holds none of ours."""
        if props.get("producer") != PRODUCER:
            return None
        values: Dict[str, Any] = {key: _decode(value) for key, value in props.items()}
        known = {f.name for f in fields(cls)}
        versions = {key[:-len("_version")]: str(value) for key, value in values.items()
                    if key.endswith("_version") and key != "schema_version"}
        details = {key: value for key, value in values.items()
                   if key not in known and not (key.endswith("_version") and key != "schema_version")}
        typed = {key: value for key, value in values.items() if key in known and key not in ("versions", "details")}
        if isinstance(typed.get("resolution"), str):
            width, height = typed["resolution"].lower().split("x")
            typed["resolution"] = (int(width), int(height))
        if typed.get("downsample_ratio") is not None:
            typed["downsample_ratio"] = float(typed["downsample_ratio"])
        typed["schema_version"] = int(typed.get("schema_version", 0))  # artifacts written before the schema: 0
        typed["static"] = bool(typed.get("static", typed.get("resolution") is not None))
        for key in ("checkpoint", "checkpoint_sha256", "export_time"):
            typed[key] = str(typed.get(key, ""))
        return cls(versions=versions, details=details, **typed)

    # ---- JSON (TorchScript extra file, artifact folders) ---------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_strings(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Optional["ArtifactMetadata"]:
        data = json.loads(text)
        return cls.from_strings({key: value if isinstance(value, str) else json.dumps(value)
                                 for key, value in data.items()})


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value

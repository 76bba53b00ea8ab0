"""One entry point, `export(model, format, precision, ...)`, over a registry of per-format exporters.

Each exporter writes its artifact to a temporary path; the artifact is then loaded with the matching
`Runtime` and compared with PyTorch on real frames (`rvm.compare`) against the explicit tolerance of
that format and precision. Only a validated artifact is renamed into place; anything else is removed.
"""
import importlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from rvm.contracts import FORMAT_PRECISIONS, FORMATS, artifact_name
from rvm.iospec import spec_path

log = logging.getLogger(__name__)

# format -> "module:function"; each function is (model, path, precision, options) -> None
EXPORTERS: Dict[str, str] = {
    "torchscript": "exporters.torchscript:export_torchscript",
    "onnx": "exporters.onnx:export_onnx",
    "tf": "exporters.tf:export_tf",
    "tfjs": "exporters.tfjs:export_tfjs",
    "coreml": "exporters.coreml:export_coreml",
    "openvino": "exporters.openvino:export_openvino",
}
# formats that can be written as a static graph (one resolution, ratio baked, true state shapes)
STATIC_FORMATS = ("onnx", "openvino")


class ExportError(RuntimeError):
    pass


@dataclass
class ExportOptions:
    """Format options; those a format does not use are ignored by it."""
    resolution: Optional[Tuple[int, int]] = None  # (width, height): CoreML is fixed-resolution
    downsample_ratio: Optional[float] = None  # baked into CoreML; validation ratio elsewhere
    simplify: bool = True  # ONNX: run onnxsim
    coreml_kind: str = "mlmodel"  # CoreML: 'mlmodel' (neural network) or 'mlpackage' (ML program)
    validate: bool = True
    validation_frames: int = 8
    validation_clip: Optional[str] = None
    static: bool = False  # ONNX/OpenVINO: fixed resolution and ratio, no dynamic dimension (needs both)
    calibration: Optional[str] = None  # int8: a clip or a folder of frames, never the validation clip
    calibration_frames: int = 16  # per calibration source


def exporter(fmt: str) -> Callable:
    module, function = EXPORTERS[fmt].split(":")
    return getattr(importlib.import_module(module), function)


def check_request(fmt: str, precision: str, options: ExportOptions) -> None:
    """Refuse unsupported combinations before any work is done."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or all")
    allowed = FORMAT_PRECISIONS[fmt]
    if precision not in allowed:
        raise ExportError(f"{fmt} cannot be exported in {precision}: it supports {', '.join(allowed)}")
    if options.static:
        if fmt not in STATIC_FORMATS:
            raise ExportError(f"--static applies to {', '.join(STATIC_FORMATS)}; {fmt} has no static profile")
        if options.resolution is None or options.downsample_ratio is None:
            raise ExportError("a static export bakes one resolution and ratio: pass --resolution WIDTHxHEIGHT and "
                              "--downsample-ratio (e.g. --resolution 1920x1080 --downsample-ratio 0.25)")
    if precision == "int8" and fmt in ("onnx", "openvino"):
        from .int8 import check_calibration
        check_calibration(options)
    if fmt == "coreml":
        if options.resolution is None or options.downsample_ratio is None:
            raise ExportError("CoreML models are fixed-resolution with the ratio baked in: pass --resolution "
                              "WIDTHxHEIGHT and --downsample-ratio (e.g. --resolution 1920x1080 --downsample-ratio 0.25)")
        if options.coreml_kind not in ("mlmodel", "mlpackage"):
            raise ExportError(f"CoreML kind must be mlmodel or mlpackage, got {options.coreml_kind!r}")
        if options.coreml_kind == "mlpackage" and precision != "fp16":
            raise ExportError("a CoreML .mlpackage (ML program) is exported in fp16 only: use --precision fp16")


def export(model, fmt: str, precision: str = None, output_dir=".", overwrite: bool = False,
           options: ExportOptions = None) -> Path:
    """Export `model` (a MattingNetwork) and return the validated artifact's path."""
    options = options or ExportOptions()
    precision = precision or FORMAT_PRECISIONS.get(fmt, ("fp32",))[0]
    check_request(fmt, precision, options)
    output_dir = Path(output_dir)
    final = output_dir / artifact_name(fmt, model.variant, precision, options.resolution,
                                       options.downsample_ratio, options.coreml_kind, options.static)
    if final.exists() and not overwrite:
        raise ExportError(f"{final} exists: pass --overwrite (overwrite=True) to replace it")
    output_dir.mkdir(parents=True, exist_ok=True)
    # same folder, same suffix: the rename is atomic and the runtime detects the format from the name
    temporary = output_dir / f".tmp-{uuid.uuid4().hex[:8]}-{final.name}"
    try:
        log.info("exporting %s %s to %s", fmt, precision, final)
        exporter(fmt)(model.eval(), temporary, precision, options)
        if options.validate:
            from .validate import validate_artifact
            validate_artifact(model, temporary, fmt, precision, options)
        remove(final)
        os.replace(temporary, final)
        if spec_path(temporary).exists():  # a static file artifact's I/O spec travels with it
            os.replace(spec_path(temporary), spec_path(final))
    finally:
        remove(temporary)
        remove(spec_path(temporary))
    return final


COREML_JOBS = (("fp16", "mlmodel"), ("int8", "mlmodel"), ("fp16", "mlpackage"))
COREML_DEFAULT_RESOLUTION, COREML_DEFAULT_RATIO = (1920, 1080), 0.25


def plan_exports(fmt: str, precision: Optional[str] = None, options: ExportOptions = None) -> list:
    """(format, precision, options) for each artifact asked for, all checked before any work starts.
    `fmt='all'` means every format and precision (CoreML: .mlmodel fp16/int8 and .mlpackage fp16, at the
    given resolution or else the official 1920x1080 / 0.25), narrowed to `precision` if one is named."""
    options = options or ExportOptions()
    if fmt != "all":
        jobs = [(fmt, precision or FORMAT_PRECISIONS.get(fmt, ("fp32",))[0], options)]
    else:
        jobs = []
        for name in FORMATS:
            if name != "coreml":
                jobs += [(name, p, options) for p in FORMAT_PRECISIONS[name] if precision in (None, p)
                         and (p != "int8" or name not in ("onnx", "openvino") or options.calibration)]
            else:
                coreml = options
                if options.resolution is None:  # the official CoreML downloads' default configuration
                    coreml = replace(options, resolution=COREML_DEFAULT_RESOLUTION,
                                     downsample_ratio=options.downsample_ratio or COREML_DEFAULT_RATIO)
                    log.info("CoreML at %dx%d, ratio %g (pass --resolution/--downsample-ratio for others)",
                             *coreml.resolution, coreml.downsample_ratio)
                jobs += [(name, p, replace(coreml, coreml_kind=kind)) for p, kind in COREML_JOBS
                         if precision in (None, p)]
        if not jobs:
            raise ExportError(f"no format can be exported in {precision}")
    for name, p, opts in jobs:
        check_request(name, p, opts)
    return jobs


def export_all(model, output_dir=".", overwrite: bool = False, options: ExportOptions = None,
               precision: Optional[str] = None) -> List[Path]:
    """Every format and precision; see `plan_exports`."""
    return [export(model, fmt, p, output_dir, overwrite, opts) for fmt, p, opts in plan_exports("all", precision, options)]


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["export", "export_all", "plan_exports", "ExportOptions", "ExportError", "EXPORTERS", "check_request"]

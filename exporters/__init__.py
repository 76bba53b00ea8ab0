"""One entry point, `export(model, format, precision, ...)`, over the format registry (`rvm.formats`).

The registered exporter writes its artifact under a temporary name in the output folder; the artifact is then
loaded with its format's `Runtime` and compared with PyTorch on real frames (`validate.validate_artifact`) against
the registered tolerance. Only a validated artifact is renamed into place; anything else is removed.
"""
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import List, Optional

from rvm import formats, iospec
from rvm.errors import UsageError
from rvm.formats import ExportOptions

log = logging.getLogger(__name__)


def export(model, fmt: str, precision: Optional[str] = None, output_dir=".", overwrite: bool = False,
           options: Optional[ExportOptions] = None) -> Path:
    """Export `model` (a MattingNetwork) and return the validated artifact's path."""
    (job,) = formats.plan(fmt, precision, options)
    return run_job(model, job, output_dir, overwrite)


def export_all(model, output_dir=".", overwrite: bool = False, options: Optional[ExportOptions] = None,
               precision: Optional[str] = None) -> List[Path]:
    """Every format and precision (see `rvm.formats.plan`), all checked before the first export starts."""
    return [run_job(model, job, output_dir, overwrite) for job in formats.plan("all", precision, options)]


def run_job(model, job: formats.ExportJob, output_dir=".", overwrite: bool = False) -> Path:
    entry, precision, options = job.format, job.precision, job.options
    output_dir = Path(output_dir)
    final = output_dir / entry.artifact_name(model.variant, precision, options)
    if final.exists() and not overwrite:
        raise UsageError(f"{final} exists: pass --overwrite (overwrite=True) to replace it")
    if options.validate:
        from .validate import validation_clip
        validation_clip(entry, precision, options)  # refuses before any work where only footage can validate
    output_dir.mkdir(parents=True, exist_ok=True)
    # same folder, same suffix: the rename is atomic and the runtime recognises the format from the name
    temporary = output_dir / f".tmp-{uuid.uuid4().hex[:8]}-{final.name}"
    try:
        log.info("exporting %s %s to %s", entry.name, precision, final)
        entry.entry_point("exporter")(model.eval(), temporary, precision, options)
        if options.validate:
            from .validate import validate_artifact
            validate_artifact(model, temporary, entry, precision, options)
        if options.static:  # the I/O spec lands first: a static artifact never stands without it
            spec = iospec.io_spec(entry.name, model.variant, precision, options.resolution, options.downsample_ratio,
                                  entry.io_layout, entry.io_dtype(precision))
            iospec.write(iospec.spec_path(final), spec)
        remove(final)
        os.replace(temporary, final)
    finally:
        remove(temporary)
    return final


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["export", "export_all", "run_job", "ExportOptions"]

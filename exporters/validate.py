"""Validation of a freshly written artifact: its own Runtime against PyTorch on real frames, with the one
`compare` the parity suite uses and the tolerance the registry gives that format and precision: on the user's clip
the footage bounds, without one the sample scene's (`Tolerance.scene`; the parity suite holds every row to both)."""
import logging
from pathlib import Path

import numpy as np

from rvm.compare import compare
from rvm.errors import BackendUnavailable, UsageError, ValidationError
from rvm.formats import ExportOptions, Format
from rvm.media.samples import VALIDATION_RATIO, default_clip, validation_frames
from rvm.runtimes import load
from rvm.runtimes.pytorch import PyTorchRuntime

log = logging.getLogger(__name__)


def validation_clip(entry: Format, precision: str, options: ExportOptions):
    """The clip this export will be validated on (None: the sample scene), or a UsageError, raised before any
    work, where the sample scene cannot prove this precision."""
    clip = options.validation_clip or default_clip()
    reason = entry.tolerances[precision].needs_clip
    if options.validate and clip is None and reason:
        raise UsageError(f"{entry.name} {precision} needs a validation clip: {reason}; pass --validation-clip with "
                         f"footage of a person (not the calibration clip), or --no-validate")
    return clip


def validate_artifact(model, path: Path, entry: Format, precision: str, options: ExportOptions) -> None:
    """Raise ValidationError when the artifact at `path` disagrees with `model` beyond its tolerance."""
    try:
        candidate = load(path, device="cpu")
    except BackendUnavailable as why:
        log.warning("%s %s: not run after export (%s)", entry.name, precision, why)
        return
    clip = validation_clip(entry, precision, options)
    frames = validation_frames(options.validation_frames, clip,
                               options.resolution if options.static else None)
    ratio = options.downsample_ratio or VALIDATION_RATIO
    reference = PyTorchRuntime(model, device="cpu")
    with candidate:
        result = compare(reference, candidate, [np.asarray(f) for f in frames], ratio)
    bounds = entry.tolerance(precision, model.refiner_name, scene=clip is None)
    source = "the sample scene" if clip is None else Path(clip).name

    def measured(label: str, value: float, bound) -> str:
        return f"{label} {value:.2e} (tolerance {'none' if bound is None else format(bound, '.2g')})"
    summary = f"{entry.name} {precision}: {result.frames} frames of {source}, " + ", ".join(
        measured(label, getattr(result, name), getattr(bounds, name)) for label, name in (
            ("alpha max abs", "pha_max"), ("alpha p99.9 abs", "pha_p999"), ("alpha mean abs", "pha_mean"),
            ("foreground max abs", "fgr_max"), ("foreground p99.9 abs", "fgr_p999")))
    problems = result.failures(bounds)
    if problems:
        raise ValidationError(f"validation failed, artifact removed: {summary}; " + "; ".join(problems))
    log.info("validated %s", summary)

"""Validation of a freshly written artifact: its own Runtime against PyTorch on real frames, with the one
`compare` the parity suite uses and the tolerance the registry gives that format and precision."""
import logging
from pathlib import Path

import numpy as np

from rvm.compare import compare
from rvm.errors import BackendUnavailable, ValidationError
from rvm.formats import ExportOptions, Format
from rvm.runtimes import load
from rvm.runtimes.pytorch import PyTorchRuntime
from rvm.samples import VALIDATION_RATIO, validation_frames

log = logging.getLogger(__name__)


def validate_artifact(model, path: Path, entry: Format, precision: str, options: ExportOptions) -> None:
    """Raise ValidationError when the artifact at `path` disagrees with `model` beyond its tolerance."""
    try:
        candidate = load(path, device="cpu")
    except BackendUnavailable as why:
        log.warning("%s %s: not run after export (%s)", entry.name, precision, why)
        return
    frames = validation_frames(options.validation_frames, options.validation_clip,
                               options.resolution if options.static else None)
    ratio = options.downsample_ratio or VALIDATION_RATIO
    reference = PyTorchRuntime(model, device="cpu")
    with candidate:
        result = compare(reference, candidate, [np.asarray(f) for f in frames], ratio)
    bounds = entry.tolerance(precision, model.refiner_name)
    alpha_bound = "none" if bounds.pha_max is None else f"{bounds.pha_max:.2g}"
    summary = (f"{entry.name} {precision}: {result.frames} frames, alpha max abs {result.pha_max:.2e} (tolerance "
               f"{alpha_bound}), alpha mean abs {result.pha_mean:.2e} (tolerance {bounds.pha_mean:.2g}), "
               f"foreground max abs {result.fgr_max:.2e} (tolerance {bounds.fgr_max:.2g})")
    problems = result.failures(bounds)
    if problems:
        raise ValidationError(f"validation failed, artifact removed: {summary}; " + "; ".join(problems))
    log.info("validated %s", summary)

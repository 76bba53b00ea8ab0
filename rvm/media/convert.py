"""`convert_video`: a `ConvertRequest` run on a runtime, or on the model it names (the official converter's entry
point)."""
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from rvm import formats
from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.media.pipeline import ConvertError, ConvertSummary, convert, parse_color
from rvm.media.request import ConvertRequest
from rvm.runtimes import load


def open_runtime(request: ConvertRequest, threads: Optional[int] = None):
    """The runtime for `request.model` (an artifact, or a checkpoint run by PyTorch eager; None: DEFAULT_CHECKPOINT)
    on `request.device`; `request.variant` picks a checkpoint's backbone. An `auto` model reads the tuning record
    (`rvm.runtimes.load`): the CLI resolves it first, tuning where needed (`rvm.measure.tune.tuned_model`)."""
    model = request.model or DEFAULT_CHECKPOINT
    options = {"variant": request.variant} if request.variant and formats.detect(Path(model)) is None else {}
    return load(model, device=request.device, threads=threads, **options)


def convert_video(request: ConvertRequest, runtime=None, on_frames: Optional[Callable[[int], None]] = None,
                  frame_range: Optional[Tuple[int, int]] = None,
                  initial_state: Optional[Sequence[np.ndarray]] = None) -> ConvertSummary:
    """Run `request` (see `rvm.media.pipeline.convert` for `on_frames`, `frame_range` and `initial_state`).

    `runtime`: any `rvm.runtimes.Runtime`, left open; when None, the model `request` names is loaded
    (`open_runtime`) and closed at the end.
    """
    if runtime is not None:
        return convert(runtime, request, on_frames, frame_range, initial_state)
    with open_runtime(request) as owned:
        return convert(owned, request, on_frames, frame_range, initial_state)


__all__ = ["convert_video", "open_runtime", "ConvertRequest", "ConvertError", "ConvertSummary", "parse_color",
           "DEFAULT_CHECKPOINT"]

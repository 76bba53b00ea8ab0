"""Validation of a freshly written artifact: its own Runtime against PyTorch on real frames."""
import logging
from pathlib import Path

import numpy as np

from rvm.compare import compare
from rvm.contracts import tolerance

log = logging.getLogger(__name__)
DEFAULT_CLIP_ENV = "RVM_VALIDATION_CLIP"


def shared_file(*parts: str):
    """A file of the project's shared material (`../shared` beside the checkout), or None where absent."""
    path = Path(__file__).resolve().parents[1].parent.joinpath("shared", *parts)
    return path if path.exists() else None


def default_clip():
    """A real clip to validate on: $RVM_VALIDATION_CLIP, else the project's shared sample footage."""
    import os
    env = os.environ.get(DEFAULT_CLIP_ENV)
    return Path(env) if env else shared_file("data", "clips", "person_a.mp4")


# The network needs about 160x90 px after downsampling to see a person: the small sample clips are
# upscaled 2x and run at ratio 0.5, so the refiner is exercised and the matte is not empty.
UPSCALE, VALIDATION_RATIO = 2, 0.5


def validation_frames(count: int, clip=None, size=None) -> list:
    """`count` uint8 RGB frames of a real clip, resized to (width, height) if given, else upscaled 2x; a
    deterministic synthetic scene with a moving figure where no clip is available."""
    clip = clip or default_clip()
    if clip is not None:
        from rvm.video import read_frames
        frames = read_frames(clip, count)
        if frames:
            height, width = frames[0].shape[:2]
            return resize_frames(frames, size or (width * UPSCALE, height * UPSCALE))
    log.warning("no validation clip found (set %s): validating on a synthetic scene", DEFAULT_CLIP_ENV)
    width, height = size or (320, 192)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        figure = ((xx - width * (0.4 + 0.02 * t)) ** 2 / (0.15 * width) ** 2 + (yy - height * 0.6) ** 2 / (0.35 * height) ** 2) < 1
        image = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)], -1).astype(np.uint8)
        image[figure] = (200, 160, 130)
        frames.append(image)
    return frames


def resize_frames(frames: list, size) -> list:
    from PIL import Image
    if frames[0].shape[1::-1] == tuple(size):
        return frames
    return [np.asarray(Image.fromarray(f).resize(tuple(size), Image.BILINEAR)) for f in frames]


def validate_artifact(model, path: Path, fmt: str, precision: str, options) -> None:
    """Raise ExportError when the artifact at `path` disagrees with `model` beyond tolerance."""
    from runtimes import BackendUnavailable, load
    from runtimes.pytorch import PyTorchRuntime

    from . import ExportError
    try:
        candidate = load(path, device="cpu")
    except BackendUnavailable as why:
        log.warning("%s %s: not run after export (%s); its spec was checked instead", fmt, precision, why)
        return
    frames = validation_frames(options.validation_frames, options.validation_clip, options.resolution)
    ratio = options.downsample_ratio or VALIDATION_RATIO
    reference = PyTorchRuntime(model, device="cpu")
    with candidate:
        result = compare(reference, candidate, [np.asarray(f) for f in frames], ratio)
    pha_tol, fgr_tol = tolerance(fmt, precision, model.refiner_name)
    summary = (f"{fmt} {precision}: {result.frames} frames, alpha max abs {result.pha_max:.2e} (tolerance {pha_tol:.0e}), "
               f"foreground max abs {result.fgr_max:.2e} (tolerance {fgr_tol:.0e})")
    problems = result.failures(fmt, precision, model.refiner_name)
    if problems:
        raise ExportError(f"validation failed, artifact removed: {summary}; " + "; ".join(problems))
    log.info("validated %s", summary)
    print(f"validated {summary}")

"""Frames to validate and compare artifacts on: a real clip when one is given, else a synthetic scene.

The clip comes from the caller or `$RVM_VALIDATION_CLIP`; the library ships no footage and never looks
for the development checkout's shared material (the Makefile and the tests point the variable at it).
"""
import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)
CLIP_ENV = "RVM_VALIDATION_CLIP"

# The network needs about 160x90 px after downsampling to see a person: small clips are upscaled 2x and run at
# ratio 0.5, so the refiner is exercised and the matte is not empty.
UPSCALE, VALIDATION_RATIO = 2, 0.5


def default_clip() -> Optional[Path]:
    """The clip named by $RVM_VALIDATION_CLIP, or None."""
    env = os.environ.get(CLIP_ENV)
    return Path(env) if env else None


def validation_frames(count: int, clip=None, size: Optional[Tuple[int, int]] = None) -> List[np.ndarray]:
    """`count` uint8 RGB frames of a real clip, resized to (width, height) if given, else upscaled 2x; a
    deterministic synthetic scene with a moving figure where no clip is given."""
    clip = clip or default_clip()
    if clip is not None:
        from .video import read_frames
        frames = read_frames(clip, count)
        if frames:
            height, width = frames[0].shape[:2]
            return resize_frames(frames, size or (width * UPSCALE, height * UPSCALE))
    log.warning("no validation clip given (pass one or set %s): validating on a synthetic scene", CLIP_ENV)
    return synthetic_frames(count, size or (320, 192))


def synthetic_frames(count: int, size: Tuple[int, int]) -> List[np.ndarray]:
    """A gradient background with a skin-toned ellipse moving right: deterministic, any size."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        figure = ((xx - width * (0.4 + 0.02 * t)) ** 2 / (0.15 * width) ** 2
                  + (yy - height * 0.6) ** 2 / (0.35 * height) ** 2) < 1
        image = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)], -1).astype(np.uint8)
        image[figure] = (200, 160, 130)
        frames.append(image)
    return frames


def resize_frames(frames: List[np.ndarray], size: Tuple[int, int]) -> List[np.ndarray]:
    from PIL import Image
    if frames[0].shape[1::-1] == tuple(size):
        return frames
    return [np.asarray(Image.fromarray(f).resize(tuple(size), Image.BILINEAR)) for f in frames]

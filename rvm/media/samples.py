"""Frames to validate and compare artifacts on: a real clip when one is given, else the sample scene.

The clip comes from the caller or `$RVM_VALIDATION_CLIP`; the library never looks for the development checkout's
shared material (the Makefile and the tests point the variable at it). Without one, exports are validated on the
sample scene: a short clip the package makes from a public-domain photograph of a person (rvm/data/README.md), a
slow camera pan and zoom, so the network sees a real person whose position changes from frame to frame and the
recurrent state matters. The registry's tolerances hold on it as on real footage (each row is checked on both in
the parity suite, and each rejects its artifact run with the state zeroed every frame on both).
"""
import logging
import os
from importlib import resources
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)
CLIP_ENV = "RVM_VALIDATION_CLIP"

# The network needs about 160x90 px after downsampling to see a person: small clips are upscaled 2x and run at
# ratio 0.5, so the refiner is exercised and the matte is not empty.
UPSCALE, VALIDATION_RATIO = 2, 0.5
SCENE_SIZE = (320, 192)  # the sample scene's default frame size (width, height)


def default_clip() -> Optional[Path]:
    """The clip named by $RVM_VALIDATION_CLIP, or None."""
    env = os.environ.get(CLIP_ENV)
    return Path(env) if env else None


def validation_frames(count: int, clip=None, size: Optional[Tuple[int, int]] = None) -> List[np.ndarray]:
    """`count` uint8 RGB frames of a real clip, resized to (width, height) if given, else upscaled 2x; the
    sample scene where no clip is given."""
    clip = clip or default_clip()
    if clip is not None:
        from rvm.media.video import read_frames
        frames = read_frames(clip, count)
        if frames:
            height, width = frames[0].shape[:2]
            return resize_frames(frames, size or (width * UPSCALE, height * UPSCALE))
    log.info("no validation clip given (pass --validation-clip or set %s): validating on the sample scene", CLIP_ENV)
    return sample_scene(count, size or SCENE_SIZE)


def sample_scene(count: int, size: Tuple[int, int] = SCENE_SIZE) -> List[np.ndarray]:
    """`count` uint8 RGB frames of (width, height): a camera panning across and zooming in on the packaged
    photograph of a person, her head at the top of the frame. Deterministic, any size and aspect."""
    from PIL import Image
    with resources.as_file(resources.files("rvm") / "data" / "person.jpg") as path, Image.open(path) as image:
        photo = image.convert("RGB")
    width, height = size
    photo_width, photo_height = photo.size
    frames = []
    for t in range(count):
        phase = t / (count - 1) if count > 1 else 0.0
        seen_width = photo_width * (1 - 0.25 * phase)  # zoom in by a quarter over the clip
        seen_height = seen_width * height / width
        if seen_height > photo_height:  # portrait frames: the photo's full height, narrower
            seen_height = photo_height
            seen_width = seen_height * width / height
        centre = photo_width * (0.45 + 0.08 * np.sin(2 * np.pi * phase))  # pan right, then left
        left = float(np.clip(centre - seen_width / 2, 0, photo_width - seen_width))
        top = float(np.clip(0.02 * photo_height, 0, photo_height - seen_height))
        box = (left, top, left + seen_width, top + seen_height)
        frames.append(np.asarray(photo.resize((width, height), Image.BILINEAR, box=box)))
    return frames


def resize_frames(frames: List[np.ndarray], size: Tuple[int, int]) -> List[np.ndarray]:
    from PIL import Image
    if frames[0].shape[1::-1] == tuple(size):
        return frames
    return [np.asarray(Image.fromarray(f).resize(tuple(size), Image.BILINEAR)) for f in frames]

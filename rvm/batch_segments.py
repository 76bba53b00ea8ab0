"""One batch job through `convert_video`: whole, or for a long clip as segments joined at the end.

(placeholder: segmenting is decided by measurement, see README "Batch")
"""
from pathlib import Path
from typing import Callable

DEFAULT_SEGMENT_FRAMES = 0


def convert_job(job, runtime, on_frames: Callable[[int], None]) -> dict:
    from .convert import convert_video
    summary = convert_video(job.input, runtime=runtime, progress=False, overwrite=True, on_frames=on_frames,
                            **{f"output_{kind}": path for kind, path in job.outputs.items()}, **job.options)
    return {"frames": summary.frames, "segments": 1, "reused_segments": 0}

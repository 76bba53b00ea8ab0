"""`ConvertRequest`: what one conversion is, built once and read by everything that converts.

The CLI builds it from the flags (`rvm.commands.options.convert_request`, the same for `rvm convert`, `rvm batch`
and `rvm live`); `convert_video` and `Runtime.convert` run it; a batch derives one per input (its output paths
named after the input: `rvm.batch.jobs`); a live session reads its model, ratio, recordings and background.
"""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

OUTPUT_KINDS = ("composition", "alpha", "foreground", "rgba")
PathLike = Union[str, Path]
BackgroundSpec = Union[None, str, Path, Sequence[int]]


@dataclass(frozen=True)
class ConvertRequest:
    """One conversion: the input, the outputs and how to write them, the conversion's options, and the model.

    `background`: a colour (tuple, 'R,G,B', '#rrggbb', name), an image or a video; default green (120, 255, 155)
    for video and, like the official converter, foreground-with-alpha PNGs for a PNG-sequence composition.
    `pipeline=False` runs decode, inference and encode in turn on one thread (the baseline the pipelined job is
    measured against). `model`: an artifact, a checkpoint path or known name (None: the default checkpoint), or
    `auto[:fast|:exact]` (the tuning record's choice); `variant` applies to a checkpoint only.
    """
    input_source: Any = None  # a video file or image folder (live: a camera, device or URL; a batch: per job)
    output_composition: Optional[PathLike] = None
    output_alpha: Optional[PathLike] = None
    output_foreground: Optional[PathLike] = None
    output_rgba: Optional[PathLike] = None  # .mov (ProRes 4444) or .webm (VP9 with alpha)
    output_type: str = "video"  # or "png_sequence": a folder of PNGs per output (RGBA stays a video)
    output_video_mbps: Optional[float] = None  # None: constant quality
    background: BackgroundSpec = None
    input_resize: Optional[Tuple[int, int]] = None  # (width, height)
    downsample_ratio: Union[str, float, None] = "auto"
    seq_chunk: int = 1  # frames per pipeline step
    overwrite: bool = False
    progress: bool = True
    pipeline: bool = True
    model: Optional[str] = None
    variant: Optional[str] = None
    device: str = "auto"

    @property
    def outputs(self) -> Dict[str, PathLike]:
        """Output kind -> path, for the outputs asked for."""
        return {kind: path for kind in OUTPUT_KINDS if (path := getattr(self, f"output_{kind}")) is not None}

    def with_outputs(self, outputs: Mapping[str, PathLike]) -> "ConvertRequest":
        """The same request writing exactly `outputs` (kind -> path)."""
        return replace(self, **{f"output_{kind}": outputs.get(kind) for kind in OUTPUT_KINDS})

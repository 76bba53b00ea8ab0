"""`convert_video`: the conversion job for a runtime or a checkpoint (the official converter's entry point)."""
from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.media.pipeline import ConvertError, ConvertSummary, convert, parse_color
from rvm.runtimes.pytorch import PyTorchRuntime


def convert_video(input_source, runtime=None, checkpoint=None, variant=None, device: str = "auto",
                  **options) -> ConvertSummary:
    """Matte `input_source` (video file or image folder); `options` are those of `rvm.media.pipeline.convert`.

    `runtime`: any `rvm.runtimes.Runtime`, left open; when None, PyTorch eager runs `checkpoint` (a path or a
    known name, default DEFAULT_CHECKPOINT) on `device`, and is closed at the end.
    """
    if runtime is not None:
        return convert(runtime, input_source, **options)
    with PyTorchRuntime.from_path(checkpoint or DEFAULT_CHECKPOINT, device=device, variant=variant) as owned:
        return convert(owned, input_source, **options)


__all__ = ["convert_video", "ConvertError", "ConvertSummary", "parse_color", "DEFAULT_CHECKPOINT"]

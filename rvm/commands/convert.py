"""`rvm convert`: matte a video or an image folder; accepts the official RVM inference.py's flags unchanged."""
from dataclasses import replace

from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.commands.options import add_model, add_output_options, convert_request


def add_arguments(parser) -> None:
    model = parser.add_argument_group("model (the official flags, or --model for any exported artifact)")
    model.add_argument("--variant", choices=["mobilenetv3", "resnet50"], help="backbone; inferred from the checkpoint")
    model.add_argument("--checkpoint", help=f"PyTorch checkpoint path or known name (default {DEFAULT_CHECKPOINT})")
    add_model(model)
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    io = parser.add_argument_group("input and outputs")
    io.add_argument("--input-source", required=True, help="video file or folder of images")
    add_output_options(io)
    io.add_argument("--output-composition", help="composition on --background (png_sequence: RGBA unless given)")
    io.add_argument("--output-alpha", help="alpha matte")
    io.add_argument("--output-foreground", help="predicted foreground")
    io.add_argument("--output-rgba", metavar="FILE", help="video with real alpha: .mov ProRes 4444 or .webm VP9")
    run = parser.add_argument_group("running")
    run.add_argument("--num-workers", type=int, default=0,
                     help="accepted for compatibility with the official script; decoding runs in its own thread")
    run.add_argument("--disable-progress", action="store_true", help="no progress bar")
    run.add_argument("--sequential", action="store_true", help="no decode/infer/encode overlap (baseline)")


def command(args) -> int:
    from rvm.measure.tune import tuned_model
    from rvm.media.convert import convert_video
    from rvm.memory import keep_freed_memory
    keep_freed_memory()  # this process is ours: PyTorch conversions ~8% faster at 1080p (see rvm/memory.py)
    request = convert_request(args)

    def input_size():
        from rvm.media.video import open_source
        with open_source(request.input_source, request.input_resize) as source:
            return source.size
    model = tuned_model(request.model, input_size, request.downsample_ratio, request.device)
    summary = convert_video(replace(request, model=model))
    print(f"{summary.frames} frames at {summary.fps:g} fps in {summary.seconds:.1f} s "
          f"({summary.frames_per_second:.1f} frames/s): " + ", ".join(summary.outputs.values()))
    return 0

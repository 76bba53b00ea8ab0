"""`rvm convert`: matte a video or an image folder; accepts the official RVM inference.py's flags unchanged."""
from rvm import tuning
from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.commands.options import add_model, add_output_options
from rvm.errors import UsageError


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
    from rvm.media.convert import convert_video
    from rvm.memory import keep_freed_memory
    keep_freed_memory()  # this process is ours: PyTorch conversions ~8% faster at 1080p (see rvm/memory.py)
    if args.model and args.checkpoint:
        raise UsageError("pass either --model (an exported artifact) or --checkpoint (PyTorch weights), not both")
    runtime = None
    if args.model:
        from rvm.measure.tune import tuned_model
        from rvm.runtimes import load
        model = args.model
        if tuning.parse_auto(model) is not None:  # the tuning record's choice for this input's size
            from rvm.media.video import open_source
            with open_source(args.input_source, args.input_resize) as source:
                size = source.size
            model = tuned_model(model, lambda: size, args.downsample_ratio, args.device)
        runtime = load(model, device=args.device)
    try:
        summary = convert_video(
            args.input_source, runtime=runtime, checkpoint=args.checkpoint, variant=args.variant, device=args.device,
            input_resize=args.input_resize, downsample_ratio=args.downsample_ratio,
            output_composition=args.output_composition, output_alpha=args.output_alpha,
            output_foreground=args.output_foreground, output_rgba=args.output_rgba, output_type=args.output_type,
            output_video_mbps=args.output_video_mbps, background=args.background, seq_chunk=args.seq_chunk,
            progress=not args.disable_progress, overwrite=args.overwrite, pipeline=not args.sequential)
    finally:
        if runtime is not None:
            runtime.close()
    print(f"{summary.frames} frames at {summary.fps:g} fps in {summary.seconds:.1f} s "
          f"({summary.frames_per_second:.1f} frames/s): " + ", ".join(summary.outputs.values()))
    return 0

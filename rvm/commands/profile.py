"""`rvm profile`: its arguments and how it runs; the work is `rvm.measure.profile`."""
import json

from rvm.commands.options import add_checkpoint, add_ratio, add_resolution
from rvm.errors import UsageError
from rvm.measure.profile import WARMUP, onnx_file, run_profiles, to_markdown


def add_arguments(parser) -> None:
    parser.add_argument("artifacts", nargs="*", metavar="ONNX", help="ONNX artifacts to profile beside PyTorch eager")
    add_resolution(parser, default="1920x1080", type=str, help="WIDTHxHEIGHT of the frame (default %(default)s)")
    add_ratio(parser, default=0.25, type=float, help="downsample ratio (default %(default)s)")
    parser.add_argument("--frames", type=int, default=5,
                        help=f"profiled frames after {WARMUP} warm-up ones (default %(default)s)")
    parser.add_argument("--full-resolution-step", choices=("auto", "fused", "graph", "both"), default="auto",
                        help="how ONNX Runtime runs the guided filter's full-resolution step: fused in one pass "
                             "(where it can be), as the graph's operators, or both, one row each (default "
                             "%(default)s, as Runtime.load)")
    add_checkpoint(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")


def command(args) -> int:
    from rvm.checkpoints import load_model
    from rvm.measure.bench import parse_resolutions
    sizes = parse_resolutions(args.resolution)
    if len(sizes) != 1:
        raise UsageError(f"--resolution takes one WIDTHxHEIGHT, got {args.resolution!r}")
    if args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    for path in args.artifacts:  # refuse a wrong artifact before minutes of profiling
        onnx_file(path)
    steps = ("fused", "graph") if args.full_resolution_step == "both" else (args.full_resolution_step,)
    report = run_profiles(load_model(args.checkpoint), args.artifacts, sizes[0], args.downsample_ratio, args.frames,
                          steps)
    print(json.dumps(report.as_dict(), indent=2) if args.json else to_markdown(report))
    return 0

"""`rvm bench`: its arguments and how it runs; the work is `rvm.measure.bench`."""
from rvm import formats
from rvm.commands.options import add_checkpoint, add_ratio, add_resolution, parse_backends
from rvm.measure.bench import DEFAULT_BACKENDS, BenchRequest, parse_resolutions, run_bench, to_markdown
from rvm.targets import REFERENCE


def add_arguments(parser) -> None:
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated subset of {REFERENCE.name},{','.join(formats.FORMATS)} "
                             f"(default: %(default)s)")
    add_resolution(parser, default="1920x1080", type=str,
                   help="WIDTHxHEIGHT, several comma-separated (default %(default)s)")
    add_ratio(parser, default="0.25", type=str, help="downsample ratio or auto (default %(default)s)")
    parser.add_argument("--frames", type=int, default=BenchRequest.frames,
                        help="timed frames per repeat (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=BenchRequest.repeats,
                        help="repeats; the median is reported (default %(default)s)")
    parser.add_argument("--e2e-frames", type=int, default=BenchRequest.e2e_frames,
                        help="frames of the encoded clip converted end to end; 0 skips (default %(default)s)")
    parser.add_argument("--e2e-repeats", type=int, default=BenchRequest.e2e_repeats,
                        help="rounds of the three conversions, taking turns; medians reported (default %(default)s)")
    parser.add_argument("--memory-frames", default="60,600",
                        help="clip lengths whose conversion peak memory is compared; empty skips (default %(default)s)")
    add_checkpoint(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    parser.add_argument("--calibration", metavar="PATH",
                        help="int8 rows: calibration clip or frame folder (several joined by commas); without it those "
                             "rows are reported unavailable")
    parser.add_argument("--clip", metavar="VIDEO", help="footage each row is proven on against PyTorch (default: "
                                                        "the sample scene, with its bounds)")
    parser.add_argument("--proof-frames", type=int, default=BenchRequest.proof_frames,
                        help="recurrent frames each row is proven over; 0 skips the proof (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")


def command(args) -> int:
    import json

    result = run_bench(BenchRequest(
        backends=parse_backends(args.backends), resolutions=parse_resolutions(args.resolution),
        downsample_ratio=args.downsample_ratio, frames=args.frames, repeats=args.repeats, e2e_frames=args.e2e_frames,
        e2e_repeats=args.e2e_repeats, memory_frames=[int(v) for v in args.memory_frames.split(",") if v.strip()],
        checkpoint=args.checkpoint, device=args.device, calibration=args.calibration, clip=args.clip,
        proof_frames=args.proof_frames))
    print(json.dumps(result, indent=2) if args.json else to_markdown(result))
    return 0

"""`rvm tune`: its arguments and how it runs; the work is `rvm.measure.tune`, the records `rvm.tuning`."""
import json
import shutil
from pathlib import Path

from rvm import formats
from rvm.commands.options import add_checkpoint, add_ratio, add_resolution, parse_backends
from rvm.errors import UsageError
from rvm.measure.tune import TuneRequest


def add_arguments(parser) -> None:
    add_resolution(parser, help="input size to tune for, e.g. 1280x720 (required unless --show)")
    add_ratio(parser, help="downsample ratio, or auto from the size (default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    parser.add_argument("--clip", metavar="VIDEO",
                        help="your footage to prove candidates on (default: the packaged sample scene, its bounds)")
    parser.add_argument("--calibration", metavar="PATH",
                        help="int8 calibration clip or frame folder, not --clip (default: the sample scene, mirrored)")
    parser.add_argument("--backends", help=f"comma-separated subset of {','.join(formats.FORMATS)} "
                                           f"(default: every format this machine can export and run)")
    parser.add_argument("--precisions", help="comma-separated subset of fp32,fp16,int8 (default: all)")
    parser.add_argument("--frames", type=int, default=TuneRequest.frames,
                        help="recurrent frames each candidate is proven over (default %(default)s)")
    parser.add_argument("--bench-frames", type=int, default=TuneRequest.bench_frames,
                        help="timed frames per repeat (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=TuneRequest.repeats,
                        help="bench repeats, taking turns (default %(default)s)")
    add_checkpoint(parser)
    parser.add_argument("--plot", metavar="PNG", help="also write the speed-against-MAD plot here")
    parser.add_argument("--show", action="store_true", help="print the tuning records in the cache and exit")
    parser.add_argument("--json", action="store_true", help="print the record as JSON instead of a table")
    parser.add_argument("--disable-progress", action="store_true", help="no progress bar")


def parse_precisions(text: str):
    names = [p.strip() for p in text.split(",") if p.strip()]
    known = {p for entry in formats.FORMATS.values() for p in entry.precisions}
    unknown = sorted(set(names) - known)
    if unknown:
        raise UsageError(f"unknown precision(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    return names


def command(args) -> int:
    from rvm.measure import tune
    if args.show:
        print(tune.show())
        return 0
    if args.resolution is None:
        raise UsageError("rvm tune needs --resolution WIDTHxHEIGHT (the input size you will matte), or --show")
    for name in ("frames", "bench_frames", "repeats"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot {args.plot}: the plot is a PNG file: name it .png")
    backends = parse_backends(args.backends) if args.backends else None
    precisions = parse_precisions(args.precisions) if args.precisions else None
    record = tune.tune(TuneRequest(
        resolution=args.resolution, downsample_ratio=args.downsample_ratio, device=args.device,
        checkpoint=args.checkpoint, clip=args.clip, calibration=args.calibration, backends=backends,
        precisions=precisions, frames=args.frames, bench_frames=args.bench_frames, repeats=args.repeats,
        progress=not args.disable_progress))
    plot = Path(record["path"]).with_suffix(".png")
    if args.plot:
        shutil.copyfile(plot, args.plot)
        plot = args.plot
    print(json.dumps(record, indent=2, default=str) if args.json else tune.to_markdown(record))
    print(f"record: {record['path']}\nplot: {plot}")
    return 0

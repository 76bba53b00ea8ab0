"""`rvm sensitivity`: its arguments and how it runs; the work is `rvm.measure.sensitivity`."""
import json
from dataclasses import asdict
from pathlib import Path

from rvm.commands.options import add_checkpoint, add_ratio
from rvm.errors import UsageError
from rvm.measure.sensitivity import run_sensitivity, to_markdown


def add_arguments(parser) -> None:
    parser.add_argument("--calibration", metavar="PATH", required=True,
                        help="calibration clip or frame folder (several joined by commas), never the compared clip")
    parser.add_argument("--clip", help="real footage to compare on (default: $RVM_VALIDATION_CLIP)")
    parser.add_argument("--frames", type=int, default=58, help="recurrent frames compared (default %(default)s)")
    add_ratio(parser, type=float, default=0.5,
              help="ratio, on the clip upscaled 2x as rvm parity does (default %(default)s)")
    parser.add_argument("--units", help="comma-separated units to try (default: every one in the graph)")
    parser.add_argument("--calibration-frames", type=int, default=16,
                        help="frames read from each calibration source (default %(default)s)")
    add_checkpoint(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")


def command(args) -> int:
    from rvm import formats
    from rvm.checkpoints import load_model
    from rvm.formats import ExportOptions, calibration_sources
    from rvm.media.samples import default_clip, validation_frames
    clip = Path(args.clip) if args.clip else default_clip()
    if clip is None:
        raise UsageError("no clip to compare on: pass --clip VIDEO (real footage of a person) "
                         "or set RVM_VALIDATION_CLIP")
    # the registry's checks of an int8 ONNX export: the calibration sources, the ratio, the extra
    formats.plan("onnx", "int8", ExportOptions(calibration=args.calibration, downsample_ratio=args.downsample_ratio))
    if clip.resolve() in {source.resolve() for source in calibration_sources(args.calibration)}:
        raise UsageError(f"{clip} is both a calibration source and the compared clip: calibrate on other footage")
    units = [u.strip() for u in args.units.split(",") if u.strip()] if args.units else None
    frames = validation_frames(args.frames, clip)
    rows = run_sensitivity(load_model(args.checkpoint), frames, args.downsample_ratio, args.calibration, units,
                           args.calibration_frames)
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else to_markdown(rows))
    return 0

"""`rvm parity`: its arguments and how it runs; the work is `rvm.measure.parity`."""
import json
from pathlib import Path

from rvm import formats
from rvm.commands.options import add_checkpoint, add_ratio, parse_backends
from rvm.errors import UsageError
from rvm.measure.parity import Proof, run_parity, to_json, to_markdown
from rvm.targets import REFERENCE, targets


def add_arguments(parser) -> None:
    names = [REFERENCE.name, *formats.FORMATS]
    parser.add_argument("--backends", default=",".join(names),
                        help=f"comma-separated subset of {','.join(names)} (default: all)")
    add_checkpoint(parser)
    parser.add_argument("--clip", help="real footage to compare on (default: $RVM_VALIDATION_CLIP)")
    parser.add_argument("--frames", type=int, default=58, help="recurrent frames per backend (default 58)")
    add_ratio(parser, type=float, default=0.5,
              help="ratio for every backend (default 0.5, on the clip upscaled 2x: the refiner is "
                   "exercised and the network sees the person at the clip's own size)")
    parser.add_argument("--calibration", metavar="PATH",
                        help="int8 rows: calibration clip or frame folder (several joined by commas), never the parity "
                             "clip; without it those rows are reported unavailable")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")


def command(args) -> int:
    from rvm.checkpoints import load_model
    from rvm.media.samples import default_clip, validation_frames
    backends = parse_backends(args.backends)
    clip = Path(args.clip) if args.clip else default_clip()
    if clip is None:
        raise UsageError("no clip to compare on: pass --clip VIDEO (real footage of a person) "
                         "or set RVM_VALIDATION_CLIP")
    model = load_model(args.checkpoint)
    frames = validation_frames(args.frames, clip)  # upscaled 2x: see rvm.media.samples
    rows = run_parity(Proof(model, frames, args.downsample_ratio, calibration=args.calibration), targets(backends),
                      reference_row=REFERENCE.name in backends)
    if args.json:
        context = {"checkpoint": args.checkpoint, "clip": str(clip), "frames": len(frames),
                   "downsample_ratio": args.downsample_ratio}
        print(json.dumps(to_json(rows, context), indent=2))
    else:
        print(f"parity against PyTorch fp32: {clip.name}, {len(frames)} frames, ratio {args.downsample_ratio:g}\n")
        print(to_markdown(rows))
    return 1 if any(r.status == "fail" for r in rows) else 0

"""`rvm export` (and `rvm-export`): a checkpoint to deployment formats, each artifact validated against PyTorch."""
import argparse

from rvm import formats
from rvm.commands.options import add_checkpoint, add_ratio, add_resolution

DEFAULT_EXPORT_DIR = "models/exports"


def add_arguments(parser) -> None:
    precisions = sorted({p for entry in formats.FORMATS.values() for p in entry.precisions})
    parser.add_argument("--format", required=True, choices=list(formats.FORMATS) + ["all"],
                        help="artifact format; 'all' writes every format and precision")
    parser.add_argument("--precision", choices=precisions,
                        help="default: the format's first (" + ", ".join(f"{n} {e.precisions[0]}" for n, e in
                                                                       formats.FORMATS.items()) +
                             "); with --format all, only the formats that support it")
    add_checkpoint(parser, help="checkpoint name from the manifest or a path (.pth or official .onnx)")
    parser.add_argument("--variant", choices=("mobilenetv3", "resnet50"), help="default: inferred from the checkpoint")
    parser.add_argument("--refiner", choices=("deep_guided_filter", "fast_guided_filter"),
                        help="default: inferred from the checkpoint")
    parser.add_argument("--static", action="store_true",
                        help="fixed resolution with the ratio baked in and every shape known (needs --resolution "
                             "and --downsample-ratio); an I/O spec JSON is written beside the artifact")
    add_resolution(parser, help="input size WIDTHxHEIGHT of a static artifact")
    add_ratio(parser, default=None, type=float,
              help="ratio baked into a static artifact; elsewhere the ratio used for validation")
    parser.add_argument("--kind", "--coreml-kind", dest="kind",
                        help="container, for formats that have several (CoreML: mlmodel or mlpackage)")
    parser.add_argument("--calibration", metavar="PATH", help="int8: clip or frame folder to calibrate on")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                        help="ONNX: simplify the graph (default on)")
    parser.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                        help="run each artifact against PyTorch after export (default on)")
    parser.add_argument("--validation-clip", help="video to validate on (default: $RVM_VALIDATION_CLIP, else a "
                                                  "sample scene: a camera move over the packaged photograph of a "
                                                  "person)")
    parser.add_argument("-o", "--output-dir", default=DEFAULT_EXPORT_DIR, help="default: %(default)s")
    parser.add_argument("--overwrite", action="store_true", help="replace artifacts that exist")


def command(args) -> int:
    from rvm.checkpoints import load_model
    from rvm.exporters import run_job
    options = formats.ExportOptions(resolution=args.resolution, downsample_ratio=args.downsample_ratio,
                                    static=args.static, simplify=args.simplify, kind=args.kind,
                                    calibration=args.calibration, validate=args.validate,
                                    validation_clip=args.validation_clip)
    jobs = formats.plan(args.format, args.precision, options)  # every request checked before any work
    model = load_model(args.checkpoint, variant=args.variant, refiner=args.refiner)
    for job in jobs:
        print(run_job(model, job, args.output_dir, args.overwrite), flush=True)
    return 0

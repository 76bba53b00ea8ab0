"""`rvm-export`: one checkpoint to every deployment format, each artifact validated against PyTorch."""
import argparse
import logging
import sys
from typing import List, Optional

from rvm.contracts import FORMATS

from . import ExportError, ExportOptions, export, plan_exports

DEFAULT_OUTPUT = "models/exports"


def parse_resolution(text: str):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be WIDTHxHEIGHT (e.g. 1920x1080), got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"resolution must be positive, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rvm-export", description="Export a Robust Video Matting checkpoint to deployment formats. Each "
        "artifact is run on real frames after writing and compared with PyTorch; over tolerance it is removed.")
    parser.add_argument("--format", required=True, choices=FORMATS + ("all",),
                        help="artifact format; 'all' writes every format and precision")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="default: the format's first (torchscript/onnx/tf fp32, tfjs int8, coreml fp16); "
                             "with --format all, only the formats that support it")
    parser.add_argument("--checkpoint", default="rvm_mobilenetv3",
                        help="checkpoint name from the manifest or a path (.pth or official .onnx)")
    parser.add_argument("--variant", choices=("mobilenetv3", "resnet50"), help="default: inferred from the checkpoint")
    parser.add_argument("--refiner", choices=("deep_guided_filter", "fast_guided_filter"),
                        help="default: inferred from the checkpoint")
    parser.add_argument("--resolution", type=parse_resolution,
                        help="CoreML and --static: fixed input size WIDTHxHEIGHT")
    parser.add_argument("--downsample-ratio", type=float,
                        help="CoreML and --static: ratio baked into the model; elsewhere the ratio used for validation")
    parser.add_argument("--static", action="store_true",
                        help="ONNX/OpenVINO: a static graph (TensorRT, OpenVINO, NCNN, MNN, TNN) at --resolution with "
                             "--downsample-ratio baked in, true state shapes, and an I/O spec JSON beside it")
    parser.add_argument("--calibration", metavar="PATH",
                        help="int8 (ONNX/OpenVINO): calibration frames, a clip or a folder of images (several joined "
                             "by commas); use footage like yours, not the clip you validate on")
    parser.add_argument("--calibration-frames", type=int, default=16, help="frames read per calibration source")
    parser.add_argument("--coreml-kind", choices=("mlmodel", "mlpackage"), default="mlmodel",
                        help="CoreML container: neural network .mlmodel or ML program .mlpackage")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                        help="ONNX: simplify with onnxsim (default on)")
    parser.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                        help="run each artifact against PyTorch after export (default on)")
    parser.add_argument("--validation-clip", help="video to validate on (default: $RVM_VALIDATION_CLIP or the "
                                                  "project's sample footage)")
    parser.add_argument("-o", "--output-dir", default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--overwrite", action="store_true", help="replace artifacts that exist")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    options = ExportOptions(resolution=args.resolution, downsample_ratio=args.downsample_ratio,
                            simplify=args.simplify, coreml_kind=args.coreml_kind, validate=args.validate,
                            validation_clip=args.validation_clip, static=args.static,
                            calibration=args.calibration, calibration_frames=args.calibration_frames)
    try:
        jobs = plan_exports(args.format, args.precision, options)
        from rvm.checkpoints import load_model
        model = load_model(args.checkpoint, variant=args.variant, refiner=args.refiner)
        for fmt, precision, opts in jobs:
            path = export(model, fmt, precision, args.output_dir, args.overwrite, opts)
            print(path, flush=True)
    except (ExportError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"rvm-export: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

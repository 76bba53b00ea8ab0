"""The `rvm` command. Each verb is a `_add_<verb>(subparsers)` function registered in VERBS (`_module_verb` for
a verb whose module brings its own arguments); it sets `handler` to the function that runs it with the parsed
arguments.

User errors (`rvm.errors.UsageError`: bad input, existing outputs, a missing extra) print one line
`rvm: error: ...` and exit 2; other failures print one line and exit 1; `-v` shows the traceback.
"""
import argparse
import importlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional

from .errors import RVMError, UsageError
from .formats import FORMATS

log = logging.getLogger("rvm")


def _ratio(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'auto', got {text!r}") from None


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="matte a video or image folder; writes composition, alpha, foreground and RGBA outputs",
        description="Matte a video. Accepts the flags of the official RVM inference.py unchanged.")
    model = parser.add_argument_group("model (the official flags, or --model for any exported artifact)")
    model.add_argument("--variant", choices=["mobilenetv3", "resnet50"], help="backbone; inferred from the checkpoint")
    model.add_argument("--checkpoint", help="PyTorch checkpoint path or known name (default rvm_mobilenetv3)")
    model.add_argument("--model", metavar="ARTIFACT", help="any artifact: .onnx, .torchscript, SavedModel folder, ...")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    io = parser.add_argument_group("input and outputs")
    io.add_argument("--input-source", required=True, help="video file or folder of images")
    io.add_argument("--input-resize", type=int, nargs=2, metavar=("W", "H"), help="resize input frames first")
    io.add_argument("--downsample-ratio", type=_ratio, default="auto", help="number in (0, 1] or auto (default)")
    io.add_argument("--output-type", choices=["video", "png_sequence"], default="video")
    io.add_argument("--output-composition", help="composition on --background (png_sequence: RGBA unless given)")
    io.add_argument("--output-alpha", help="alpha matte")
    io.add_argument("--output-foreground", help="predicted foreground")
    io.add_argument("--output-rgba", metavar="FILE", help="video with real alpha: .mov ProRes 4444 or .webm VP9")
    io.add_argument("--output-video-mbps", type=float, help="video bitrate in Mbps (default: constant quality)")
    io.add_argument("--background", metavar="COLOR|IMAGE|VIDEO",
                    help="composition background: R,G,B or #rrggbb or a colour name, an image, or a video "
                         "(default green 120,255,155)")
    io.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    run = parser.add_argument_group("running")
    run.add_argument("--seq-chunk", type=int, default=1, help="frames per pipeline step (default 1)")
    run.add_argument("--num-workers", type=int, default=0,
                     help="accepted for compatibility with the official script; decoding runs in its own thread")
    run.add_argument("--disable-progress", action="store_true", help="no progress bar")
    run.add_argument("--sequential", action="store_true", help="no decode/infer/encode overlap (baseline)")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args) -> int:
    from .convert import convert_video
    from .memory import keep_freed_memory
    keep_freed_memory()  # this process is ours: PyTorch conversions ~8% faster at 1080p (see rvm/memory.py)
    if args.model and args.checkpoint:
        raise UsageError("pass either --model (an exported artifact) or --checkpoint (PyTorch weights), not both")
    runtime = None
    if args.model:
        from .runtimes import load
        runtime = load(args.model, device=args.device)
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


def _resolution(text: str):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be WIDTHxHEIGHT (e.g. 1920x1080), got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"resolution must be positive, got {text!r}")
    return width, height


DEFAULT_EXPORT_DIR = "models/exports"


def _add_export(subparsers) -> None:
    precisions = sorted({p for entry in FORMATS.values() for p in entry.precisions})
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to deployment formats, each validated against PyTorch",
        description="Export a Robust Video Matting checkpoint to deployment formats. Each artifact is run on real "
                    "frames after writing and compared with PyTorch; over tolerance it is removed.")
    parser.add_argument("--format", required=True, choices=list(FORMATS) + ["all"],
                        help="artifact format; 'all' writes every format and precision")
    parser.add_argument("--precision", choices=precisions,
                        help="default: the format's first (" + ", ".join(f"{n} {e.precisions[0]}" for n, e in
                                                                       FORMATS.items()) +
                             "); with --format all, only the formats that support it")
    parser.add_argument("--checkpoint", default="rvm_mobilenetv3",
                        help="checkpoint name from the manifest or a path (.pth or official .onnx)")
    parser.add_argument("--variant", choices=("mobilenetv3", "resnet50"), help="default: inferred from the checkpoint")
    parser.add_argument("--refiner", choices=("deep_guided_filter", "fast_guided_filter"),
                        help="default: inferred from the checkpoint")
    parser.add_argument("--static", action="store_true",
                        help="fixed resolution with the ratio baked in and every shape known (needs --resolution "
                             "and --downsample-ratio); an I/O spec JSON is written beside the artifact")
    parser.add_argument("--resolution", type=_resolution, help="input size WIDTHxHEIGHT of a static artifact")
    parser.add_argument("--downsample-ratio", type=float,
                        help="ratio baked into a static artifact; elsewhere the ratio used for validation")
    parser.add_argument("--kind", "--coreml-kind", dest="kind",
                        help="container, for formats that have several (CoreML: mlmodel or mlpackage)")
    parser.add_argument("--calibration", metavar="PATH", help="int8: clip or frame folder to calibrate on")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                        help="ONNX: simplify the graph (default on)")
    parser.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                        help="run each artifact against PyTorch after export (default on)")
    parser.add_argument("--validation-clip", help="video to validate on (default: $RVM_VALIDATION_CLIP, else a "
                                                  "sample scene: a camera move over the packaged photograph of a person)")
    parser.add_argument("-o", "--output-dir", default=DEFAULT_EXPORT_DIR, help="default: %(default)s")
    parser.add_argument("--overwrite", action="store_true", help="replace artifacts that exist")
    parser.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from . import formats
    from .checkpoints import load_model
    from .exporters import run_job
    options = formats.ExportOptions(resolution=args.resolution, downsample_ratio=args.downsample_ratio,
                                    static=args.static, simplify=args.simplify, kind=args.kind,
                                    calibration=args.calibration, validate=args.validate,
                                    validation_clip=args.validation_clip)
    jobs = formats.plan(args.format, args.precision, options)  # every request checked before any work
    model = load_model(args.checkpoint, variant=args.variant, refiner=args.refiner)
    for job in jobs:
        print(run_job(model, job, args.output_dir, args.overwrite), flush=True)
    return 0


def _add_batch(subparsers) -> None:
    from .batch import DEFAULT_RETRIES
    from .batch_jobs import OUTPUT_KINDS
    parser = subparsers.add_parser(
        "batch", help="matte many videos: a local worker pool by default, or a Ray cluster (--ray)",
        description="Convert many inputs with one model. Re-running the same command skips the jobs the ledger in "
                    "the output folder records done and redoes the rest. Exit 0 when every job succeeded, 1 when "
                    "some failed (each with its reason in the summary), 2 on input that cannot start.")
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="video files, folders of videos, image-sequence "
                        "folders, or globs (quote them: 'footage/**/*.mp4')")
    parser.add_argument("--manifest", metavar="FILE", help="CSV or JSONL: input, outputs by kind "
                        f"({', '.join(OUTPUT_KINDS)}), per-job options (output_type, background, downsample_ratio, "
                        "input_resize, output_video_mbps, seq_chunk)")
    parser.add_argument("-o", "--output-dir", required=True, help="where outputs, the ledger and the summary go")
    parser.add_argument("--model", metavar="ARTIFACT", help="any artifact or checkpoint (default rvm_mobilenetv3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto: a GPU per worker if any)")
    out = parser.add_argument_group("outputs (as rvm convert)")
    out.add_argument("--outputs", default="composition", metavar="KIND[,KIND]",
                     help=f"which outputs, comma-separated: {', '.join(OUTPUT_KINDS)} (default composition)")
    out.add_argument("--output-type", choices=["video", "png_sequence"], default="video")
    out.add_argument("--video-format", choices=["mp4", "mov", "mkv", "webm"], default="mp4")
    out.add_argument("--rgba-format", choices=["mov", "webm"], default="mov")
    out.add_argument("--background", metavar="COLOR|IMAGE|VIDEO", help="composition background (as rvm convert)")
    out.add_argument("--downsample-ratio", type=_ratio, default="auto")
    out.add_argument("--input-resize", type=int, nargs=2, metavar=("W", "H"))
    out.add_argument("--output-video-mbps", type=float)
    out.add_argument("--seq-chunk", type=int, default=1)
    out.add_argument("--overwrite", action="store_true", help="replace outputs that exist before the first run")
    run = parser.add_argument_group("running")
    run.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run on a Ray cluster (HOST:PORT, ray://HOST:PORT or auto); no address: a local Ray")
    run.add_argument("--workers", type=int, help="local worker processes (default: measured, see README)")
    run.add_argument("--threads", type=int, help="threads per worker (default 1)")
    run.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                     help=f"attempts after the first for a failing job (default {DEFAULT_RETRIES})")
    run.add_argument("--segment-frames", type=int,
                     help="convert long clips as segments of this many frames (0: never; default: see README)")
    run.add_argument("--disable-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_batch)


def _run_batch(args) -> int:
    from .batch import SUMMARY_NAME, batch_convert
    result = batch_convert(
        args.inputs, args.output_dir, manifest=args.manifest, outputs=[k.strip() for k in args.outputs.split(",")],
        output_type=args.output_type, video_format=args.video_format, rgba_format=args.rgba_format,
        model=args.model, device=args.device, overwrite=args.overwrite, retries=args.retries, workers=args.workers,
        threads=args.threads, ray_address=args.ray or None, use_ray=args.ray is not None,
        segment_frames=args.segment_frames, progress=not args.disable_progress, background=args.background,
        downsample_ratio=args.downsample_ratio, input_resize=args.input_resize,
        output_video_mbps=args.output_video_mbps, seq_chunk=args.seq_chunk)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts.items()))
    print(f"{len(result.jobs)} jobs in {result.seconds:.1f} s ({counts}); summary: "
          f"{Path(args.output_dir) / SUMMARY_NAME}")
    for job in result.jobs:
        if job["outcome"] == "failed":
            print(f"failed: {job['input']}: {job['reason']}", file=sys.stderr)
    return 0 if result.succeeded else 1


# verb registration: a new verb is one `_add_<verb>` function and one entry here
def _module_verb(name: str, help: str, description: str) -> Callable:
    """A verb whose module `rvm.<name>` defines `add_arguments(parser)` and `command(args)`."""
    def add(subparsers) -> None:
        module = importlib.import_module(f".{name}", __package__)
        parser = subparsers.add_parser(name, help=help, description=description)
        module.add_arguments(parser)
        parser.set_defaults(handler=module.command)
    return add


_add_parity = _module_verb(
    "parity", help="compare every backend and precision with PyTorch fp32 on real footage",
    description="Export the checkpoint to every format, run each artifact over real frames with recurrent state, "
                "and print the error against PyTorch fp32 per backend (exit 1 if one is over tolerance).")
_add_bench = _module_verb(
    "bench", help="throughput and memory per backend, as ratios to PyTorch eager fp32",
    description="Tensor throughput, end-to-end conversion throughput (pipelined vs sequential) and peak memory "
                "per backend, each measured beside PyTorch eager fp32 in the same run.")
_add_profile = _module_verb(
    "profile", help="per-block time of a frame in PyTorch eager and ONNX artifacts",
    description="Time each block of the network (encoder, LR-ASPP, decoder blocks, projection, refiner) on one "
                "frame size: PyTorch eager fp32 through module hooks, ONNX artifacts through ONNX Runtime's profiler.")
_add_sensitivity = _module_verb(
    "sensitivity", help="alpha error of int8 per part of the network, each quantized alone",
    description="Quantize each unit of the network (encoder stage, LR-ASPP, decoder block, projection, refiner) "
                "to int8 alone, ONNX Runtime QDQ calibrated with the state flowing, and report its alpha MAD, dtSSD "
                "and drift against PyTorch fp32 on a clip; also the default int8 set and everything in int8.")
_add_web = _module_verb(
    "web", help="build (and serve) a page that mattes camera or video in the browser with TF.js/ONNX artifacts",
    description="Write a self-contained folder: a page that mattes the camera or a local video in the browser with "
                "the given TF.js and ONNX artifacts (TF.js on WebGPU, WebGL or wasm; onnxruntime-web on WebGPU or "
                "wasm), with its engines copied in, so it needs no network. --serve serves it on 127.0.0.1.")


_add_env = _module_verb(
    "env", help="versions, CPU, GPUs and which formats can export and run here: paste it into bug reports",
    description="Print the toolkit, Python, torch (ATen CPU capability, oneDNN, threads) and backend package "
                "versions, TF's oneDNN setting, Node.js and the npm packages of the TF.js runner and the web page, "
                "Chromium, the CPU (model, cores, AVX2/AVX-512/AMX/NEON flags), memory and GPUs, and for each "
                "registered format whether it can export and run here and why not. The first thing a bug report "
                "needs.")


VERBS: List[Callable] = [_add_convert, _add_batch, _add_export, _add_parity, _add_bench, _add_profile, _add_sensitivity,
                         _add_web, _add_env]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvm", description="Robust Video Matting toolkit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(subparsers)
    for verb in subparsers.choices.values():  # `rvm VERB -v` too; SUPPRESS keeps `rvm -v VERB` from being reset
        verb.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="debug logging and tracebacks")
    return parser


def main(argv: Optional[List[str]] = None, prog: str = "rvm") -> int:
    parser = build_parser()
    parser.prog = prog
    args = parser.parse_args(argv)  # argparse itself prints `rvm: error: ...` and exits 2 on bad flags
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted; no partial outputs were kept", file=sys.stderr)
        return 130
    except Exception as error:
        if args.verbose:
            traceback.print_exc()
        if isinstance(error, UsageError):
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, RVMError):
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 1
        print(f"{prog}: error: {type(error).__name__}: {error} (a bug: run with -v for the traceback)", file=sys.stderr)
        return 1


def export_main(argv: Optional[List[str]] = None) -> int:
    """`rvm-export ...`: the same as `rvm export ...`."""
    return main(["export", *(sys.argv[1:] if argv is None else argv)], prog="rvm-export")


if __name__ == "__main__":
    sys.exit(main())

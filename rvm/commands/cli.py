"""The `rvm` command. Each verb is one module, `rvm.commands.<verb>`, with `add_arguments(parser)` and
`command(args)` (the work itself lives in its layer: `rvm.measure`, `rvm.batch`, `rvm.web`, ...); VERBS registers it
with its help through `_module_verb`. Flags that mean the same thing are spelled the same in every verb
(`rvm.commands.options`).

User errors (`rvm.errors.UsageError`: bad input, existing outputs, a missing extra) print one line
`rvm: error: ...` and exit 2; other failures print one line and exit 1; `-v` shows the traceback.
"""
import argparse
import importlib
import logging
import sys
import traceback
from typing import Callable, List, Optional

from rvm.errors import RVMError, UsageError

log = logging.getLogger("rvm")


# verb registration: a new verb is a module with `add_arguments` and `command`, and one entry here
def _module_verb(name: str, help: str, description: str) -> Callable:
    """The verb `name`, whose module `rvm.commands.<name>` defines `add_arguments(parser)` and `command(args)`."""
    def add(subparsers) -> None:
        verb = importlib.import_module(f"rvm.commands.{name}")
        parser = subparsers.add_parser(name, help=help, description=description)
        verb.add_arguments(parser)
        parser.set_defaults(handler=verb.command)
    return add


_add_convert = _module_verb(
    "convert",
    help="matte a video or image folder; writes composition, alpha, foreground and RGBA outputs",
    description="Matte a video. Accepts the flags of the official RVM inference.py unchanged.")
_add_batch = _module_verb(
    "batch",
    help="matte many videos: a local worker pool by default, or a Ray cluster (--ray)",
    description="Convert many inputs with one model. Re-running the same command skips the jobs the ledger in the "
                "output folder records done and redoes the rest. Exit 0 when every job succeeded, 1 when some "
                "failed (each with its reason in the summary), 2 on input that cannot start.")
_add_export = _module_verb(
    "export",
    help="export a checkpoint to deployment formats, each validated against PyTorch",
    description="Export a Robust Video Matting checkpoint to deployment formats. Each artifact is run on real "
                "frames after writing and compared with PyTorch; over tolerance it is removed.")
_add_parity = _module_verb(
    "parity",
    help="compare every backend and precision with PyTorch fp32 on real footage",
    description="Export the checkpoint to every format, run each artifact over real frames with recurrent state, "
                "and print the error against PyTorch fp32 per backend (exit 1 if one is over tolerance).")
_add_bench = _module_verb(
    "bench",
    help="throughput and memory per backend, as ratios to PyTorch eager fp32",
    description="Tensor throughput, end-to-end conversion throughput (pipelined vs sequential) and peak memory "
                "per backend, each measured beside PyTorch eager fp32 in the same run.")
_add_profile = _module_verb(
    "profile",
    help="per-block time of a frame in PyTorch eager and ONNX artifacts",
    description="Time each block of the network (encoder, LR-ASPP, decoder blocks, projection, refiner) on one "
                "frame size: PyTorch eager fp32 through module hooks, ONNX artifacts through ONNX Runtime's profiler.")
_add_sensitivity = _module_verb(
    "sensitivity",
    help="alpha error of int8 per part of the network, each quantized alone",
    description="Quantize each unit of the network (encoder stage, LR-ASPP, decoder block, projection, refiner) "
                "to int8 alone, ONNX Runtime QDQ calibrated with the state flowing, and report its alpha MAD, dtSSD "
                "and drift against PyTorch fp32 on a clip; also the default int8 set and everything in int8.")
_add_web = _module_verb(
    "web",
    help="build (and serve) a page that mattes camera or video in the browser with TF.js/ONNX artifacts",
    description="Write a self-contained folder: a page that mattes the camera or a local video in the browser with "
                "the given TF.js and ONNX artifacts (TF.js on WebGPU, WebGL or wasm; onnxruntime-web on WebGPU or "
                "wasm), with its engines copied in, so it needs no network. --serve serves it on 127.0.0.1.")
_add_tune = _module_verb(
    "tune",
    help="find the fastest proven artifact for this machine and input size (what --model auto uses)",
    description="Export every format and precision this machine can run (static where offered), prove each "
                "against PyTorch fp32 on your clip or the sample scene, bench them side by side with PyTorch eager "
                "and the official ONNX download, and write a tuning record (per quality class: exact, fast) and a "
                "speed-against-MAD plot into the user cache. --model auto[:exact|:fast] reads it.")


_add_live = _module_verb(
    "live",
    help="matte a camera, stream or video file in real time to a virtual camera, a page (OBS), files or stdout",
    description="Capture, matte and deliver in real time: capture, inference and each sink run on their own threads "
                "with one-slot queues that keep the newest frame, so latency stays bounded when the model is slower "
                "than the source (stale frames are dropped and counted). A lost camera or stream is reopened with "
                "backoff; Ctrl+C closes every sink and finalises recordings.")


_add_env = _module_verb(
    "env",
    help="versions, CPU, GPUs and which formats can export and run here: paste it into bug reports",
    description="Print the toolkit, Python, torch (ATen CPU capability, oneDNN, threads) and backend package "
                "versions, TF's oneDNN setting, Node.js and the npm packages of the TF.js runner and the web page, "
                "Chromium, the CPU (model, cores, AVX2/AVX-512/AMX/NEON flags), memory and GPUs, and for each "
                "registered format whether it can export and run here and why not. The first thing a bug report "
                "needs.")


VERBS: List[Callable] = [_add_convert, _add_batch, _add_export, _add_parity, _add_bench, _add_profile, _add_sensitivity,
                         _add_web, _add_tune, _add_live, _add_env]


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

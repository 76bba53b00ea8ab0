"""The CLI's vocabulary: one spelling per meaning, shared by every verb (tests/test_cli_vocabulary.py holds it).

A flag that means the same thing is declared here once (`add_ratio`, `add_resolution`, `add_output_options`) or
spelled as here; an old spelling keeps parsing as a hidden alias (`HIDDEN_ALIASES`), absent from --help.
"""
import argparse
from dataclasses import fields
from typing import List, Optional

from rvm import formats
from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.errors import UsageError
from rvm.media.request import ConvertRequest
from rvm.targets import REFERENCE

# canonical spelling -> old spellings that still parse into the same dest, hidden from --help
HIDDEN_ALIASES = {"--downsample-ratio": ("--ratio",), "--resolution": ("--resolutions",)}
OUTPUT_TYPES = ("video", "png_sequence")


def ratio(text: str):
    """A downsample ratio: a number, or 'auto' (chosen from the frame size)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'auto', got {text!r}") from None


def resolution(text: str):
    """WIDTHxHEIGHT -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be WIDTHxHEIGHT (e.g. 1920x1080), got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"resolution must be positive, got {text!r}")
    return width, height


def add_option(parser, flag: str, **kwargs) -> argparse.Action:
    """`parser.add_argument(flag, **kwargs)` plus `flag`'s old spellings (HIDDEN_ALIASES): they parse into the
    same dest with the same type, and --help shows only `flag`."""
    action = parser.add_argument(flag, **kwargs)
    for alias in HIDDEN_ALIASES.get(flag, ()):
        parser.add_argument(alias, dest=action.dest, type=action.type, nargs=action.nargs, choices=action.choices,
                            metavar=action.metavar, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action


def add_ratio(parser, default="auto", type=ratio, help: Optional[str] = None) -> argparse.Action:
    return add_option(parser, "--downsample-ratio", type=type, default=default, metavar="RATIO",
                      help=help or "number in (0, 1] or auto (default %(default)s)")


def add_resolution(parser, default=None, type=resolution, help: Optional[str] = None) -> argparse.Action:
    return add_option(parser, "--resolution", type=type, default=default, metavar="WIDTHxHEIGHT",
                      help=help or "input size")


def add_output_options(group, overwrite_help: str = "replace outputs that exist") -> None:
    """The output and conversion options of a conversion, the same in `rvm convert` and `rvm batch` (where they
    apply to every job)."""
    group.add_argument("--output-type", choices=OUTPUT_TYPES, default="video",
                       help="videos or PNG sequences (default %(default)s)")
    group.add_argument("--background", metavar="COLOR|IMAGE|VIDEO",
                       help="composition background: R,G,B or #rrggbb or a colour name, an image, or a video "
                            "(default green 120,255,155)")
    add_ratio(group, help="number in (0, 1] or auto (default)")
    group.add_argument("--input-resize", type=int, nargs=2, metavar=("W", "H"), help="resize input frames first")
    group.add_argument("--output-video-mbps", type=float, help="video bitrate in Mbps (default: constant quality)")
    group.add_argument("--seq-chunk", type=int, default=1, help="frames per pipeline step (default 1)")
    group.add_argument("--overwrite", action="store_true", help=overwrite_help)


def add_model(parser, default_note: str = "") -> argparse.Action:
    """`--model`: an artifact or checkpoint, or `auto[:fast|:exact]` (the tuning record's choice, `rvm.tuning`)."""
    return parser.add_argument(
        "--model", metavar="ARTIFACT|auto",
        help="an exported artifact (.onnx, SavedModel folder, ...) or a checkpoint; or auto, auto:fast, auto:exact: "
             "the fastest artifact `rvm tune` proved on this machine for the input's size, tuned first if there is "
             "none" + default_note)


def convert_request(args) -> ConvertRequest:
    """The one `ConvertRequest` of `rvm convert`, `rvm batch` and `rvm live`: each verb declares the flags that
    apply to it (`add_output_options`, `add_model`, ...), spelled as the request's fields; what a verb lacks keeps
    the request's default. `--model` or `--checkpoint` (not both) is the model."""
    given = vars(args)
    if given.get("model") and given.get("checkpoint"):
        raise UsageError("pass either --model (an exported artifact) or --checkpoint (PyTorch weights), not both")
    values = {field.name: given[field.name] for field in fields(ConvertRequest) if field.name in given}
    if values.get("input_resize") is not None:
        values["input_resize"] = tuple(values["input_resize"])
    values["model"] = given.get("model") or given.get("checkpoint")
    return ConvertRequest(**values, progress=not given.get("disable_progress", False),
                          pipeline=not given.get("sequential", False))


def add_checkpoint(parser, help: str = "checkpoint name or path (default %(default)s)") -> argparse.Action:
    return parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=help)


def parse_backends(text: str) -> List[str]:
    """`--backends`: registered format names and the reference, comma-separated."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = sorted(set(names) - {REFERENCE.name, *formats.FORMATS})
    if unknown:
        raise UsageError(f"unknown backend(s) {', '.join(unknown)}: "
                         f"choose from {REFERENCE.name}, {', '.join(formats.FORMATS)}")
    return names

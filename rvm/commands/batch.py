"""`rvm batch`: matte many videos with one model, on a local worker pool or a Ray cluster."""
import sys
from pathlib import Path

from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.commands.options import add_model, add_output_options, convert_request


def add_arguments(parser) -> None:
    from rvm.batch.jobs import DEFAULT_RETRIES, OUTPUT_KINDS
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="video files, folders of videos, image-sequence "
                        "folders, or globs (quote them: 'footage/**/*.mp4')")
    parser.add_argument("--manifest", metavar="FILE", help="CSV or JSONL: input, outputs by kind "
                        f"({', '.join(OUTPUT_KINDS)}), per-job options (output_type, background, downsample_ratio, "
                        "input_resize, output_video_mbps, seq_chunk)")
    parser.add_argument("-o", "--output-dir", required=True, help="where outputs, the ledger and the summary go")
    add_model(parser, f" (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto: a GPU per worker if any)")
    out = parser.add_argument_group("outputs (as rvm convert)")
    out.add_argument("--outputs", default="composition", metavar="KIND[,KIND]",
                     help=f"which outputs, comma-separated: {', '.join(OUTPUT_KINDS)} (default composition)")
    out.add_argument("--video-format", choices=["mp4", "mov", "mkv", "webm"], default="mp4")
    out.add_argument("--rgba-format", choices=["mov", "webm"], default="mov")
    add_output_options(out, overwrite_help="replace outputs that exist before the first run")
    run = parser.add_argument_group("running")
    run.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run on a Ray cluster (HOST:PORT, ray://HOST:PORT or auto); no address: a local Ray")
    run.add_argument("--workers", type=int, help="local worker processes (default: measured, see docs/batch.md)")
    run.add_argument("--threads", type=int, help="threads per worker (default 1)")
    run.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                     help=f"attempts after the first for a failing job (default {DEFAULT_RETRIES})")
    run.add_argument("--segment-frames", type=int,
                     help="convert long clips as segments of this many frames (0: never; default: see docs/batch.md)")
    run.add_argument("--disable-progress", action="store_true", help="no progress bar")


def command(args) -> int:
    from rvm.batch.driver import SUMMARY_NAME, batch_convert
    from rvm.batch.jobs import BatchRequest
    result = batch_convert(BatchRequest(
        args.inputs, args.output_dir, convert_request(args), manifest=args.manifest,
        outputs=[k.strip() for k in args.outputs.split(",")], video_format=args.video_format,
        rgba_format=args.rgba_format, retries=args.retries, workers=args.workers, threads=args.threads,
        use_ray=args.ray is not None, ray_address=args.ray or None, segment_frames=args.segment_frames))
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts.items()))
    print(f"{len(result.jobs)} jobs in {result.seconds:.1f} s ({counts}); summary: "
          f"{Path(args.output_dir) / SUMMARY_NAME}")
    for job in result.jobs:
        if job["outcome"] == "failed":
            print(f"failed: {job['input']}: {job['reason']}", file=sys.stderr)
    return 0 if result.succeeded else 1

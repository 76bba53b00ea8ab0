"""`rvm live`: a camera, stream or paced video file in; the matte out to a virtual camera, a local page (OBS
Browser Source), recordings and/or raw RGBA on stdout, in real time (see docs/live.md)."""
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from rvm.checkpoints import DEFAULT_CHECKPOINT
from rvm.commands.options import add_model, add_ratio, add_resolution, convert_request
from rvm.errors import UsageError

log = logging.getLogger(__name__)
STATUS_EVERY_S = 1.0


def add_arguments(parser) -> None:
    source = parser.add_argument_group("source")
    source.add_argument("--input-source", default="0",
                        help="camera index (default 0), device (/dev/video2, video=NAME), stream URL (rtsp://, "
                             "http://, udp://, srt://) or a video file played at its frame rate as a camera")
    source.add_argument("--loop", action="store_true", help="play the video file again from the start when it ends")
    add_resolution(source, help="size to ask the camera for (a file is resized to it)")
    source.add_argument("--fps", type=float, help="frame rate to ask the camera for (a file plays at it)")
    source.add_argument("--reconnect-seconds", type=float, default=10.0,
                        help="how long to keep reopening a lost camera or stream before giving up "
                             "(default %(default)s)")
    model = parser.add_argument_group("model")
    add_model(model)
    model.add_argument("--checkpoint", help=f"PyTorch checkpoint path or known name (default {DEFAULT_CHECKPOINT})")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    model.add_argument("--threads", type=int, help="inference threads (default: the runtime's default)")
    add_ratio(model, help="number in (0, 1] or auto: chosen from the frame size (default)")
    sinks = parser.add_argument_group("sinks (one or several)")
    sinks.add_argument("--virtual-camera", nargs="?", const="", metavar="DEVICE",
                       help="send the composition to a virtual camera (pyvirtualcam; optional device, e.g. "
                            "/dev/video10)")
    sinks.add_argument("--page", action="store_true",
                       help="serve a page of the RGBA matte on a transparent background (OBS Browser Source)")
    sinks.add_argument("--preview", action="store_true",
                       help="show the composition on --background in a window (needs a display; in the window q or "
                            "Escape stops, r resets the recurrent state)")
    sinks.add_argument("--host", default="127.0.0.1", help="address the page binds (default %(default)s)")
    sinks.add_argument("--port", type=int, default=8765, help="port of the page (default %(default)s; 0: any free)")
    sinks.add_argument("--output-composition", help="record the composition on --background")
    sinks.add_argument("--output-alpha", help="record the alpha matte")
    sinks.add_argument("--output-foreground", help="record the predicted foreground")
    sinks.add_argument("--output-rgba", metavar="FILE", help="record with real alpha: .mov ProRes 4444 or .webm VP9")
    sinks.add_argument("--raw-stdout", action="store_true",
                       help="raw RGBA frames on stdout for FFmpeg or GStreamer (size and rate on stderr)")
    sinks.add_argument("--background", metavar="COLOR|IMAGE|VIDEO|blur",
                       help="composition background: R,G,B, #rrggbb, a colour name, an image, a video, or blur "
                            "(the camera's own background blurred; default for the virtual camera and the preview)")
    sinks.add_argument("--overwrite", action="store_true", help="replace recordings that exist")
    run = parser.add_argument_group("running")
    run.add_argument("--stats", metavar="FILE", help="keep the counters and latencies as JSON in FILE (every second)")
    run.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl+C or the "
                                                    "end of the input)")
    run.add_argument("--benchmark", action="store_true",
                     help="measure: the source (default: a sample clip, looped) paced at --fps (default 30) into a "
                          "sink that renders RGBA; prints delivered fps, dropped share and latency p50/p95")


def load_model(args, request, source):
    """The runtime `rvm convert` would run: `request.model` (any artifact or checkpoint; auto: the tuning record's
    choice for the source's size, tuned first where there is none) with --threads."""
    from rvm.measure.tune import tuned_model
    from rvm.media.convert import open_runtime

    def source_size():
        if args.resolution is not None:
            return args.resolution
        source.open()  # what the camera gives unasked: open it once to see
        size = source.size
        source.close()
        return size
    model = tuned_model(request.model, source_size, request.downsample_ratio, request.device)
    return open_runtime(replace(request, model=model), args.threads)


def build_sinks(args, request, source_name: str):
    from rvm.live.page import PageSink
    from rvm.live.preview import PreviewSink
    from rvm.live.sinks import BLUR, RawSink, RecordingSink, VirtualCameraSink
    sinks = []
    if args.virtual_camera is not None:
        sinks.append(VirtualCameraSink(request.background or BLUR, device=args.virtual_camera))
    if args.preview:
        sinks.append(PreviewSink(request.background or BLUR))
    if args.page:
        sinks.append(PageSink(args.host, args.port))
    background = None if request.background == BLUR else request.background
    for kind, path in request.outputs.items():
        sinks.append(RecordingSink(path, kind, background if kind == "composition" else None, request.overwrite,
                                   source_name))
    if args.raw_stdout:
        sinks.append(RawSink())
    return sinks


def write_stats(path: Path, snapshot: dict) -> None:
    """Replace `path` in one step, so a reader never sees half a file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(snapshot, out, indent=2)
        os.replace(temporary, path)
    except BaseException:  # a Ctrl+C in here leaves no temporary behind
        Path(temporary).unlink(missing_ok=True)
        raise


def key_input() -> Optional[int]:
    """The file descriptor of stdin, where there is one to read keys from."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # None, closed, or replaced (as under pytest)
        return None


def read_keys(session, descriptor: int) -> None:
    """`r` + Enter resets the recurrent state, `q` + Enter stops; the end of the input ends the reading.

    Reads the file descriptor itself, not `sys.stdin`: this daemon thread may still be waiting for a line when the
    program exits, and Python aborts at exit when a daemon thread holds the lock of a buffered `sys.stdin`."""
    pending = b""
    while chunk := os.read(descriptor, 1024):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            key = line.strip().lower()
            if key == b"r":
                session.reset()
                log.info("recurrent state reset")
            elif key == b"q":
                session.end()
                return


@contextlib.contextmanager
def on_signals(handler):
    """While inside, Ctrl+C (SIGINT) and `kill` (SIGTERM) call `handler`. Only the main thread can set handlers;
    a signal the shell made the program ignore (a job started with `&`) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(number) in (signal.SIG_DFL, signal.default_int_handler)}
    try:
        yield
    finally:
        for number, previous in replaced.items():
            signal.signal(number, previous)


def run_session(session, duration, stats_path, show_status: bool) -> dict:
    """Run until the input ends, `duration` passes, `q`, Ctrl+C or SIGTERM; then stop, finalising every sink (a
    second Ctrl+C while the sinks close does not cut a recording short: the stop is bounded)."""
    from rvm.live.stats import status_line
    tty = sys.stderr.isatty()
    with on_signals(signal.default_int_handler):  # SIGTERM too: as Ctrl+C
        session.start()  # a Ctrl+C in here: start() closes what it opened, and the command reports it (exit 130)
        try:
            if show_status and (descriptor := key_input()) is not None:
                threading.Thread(target=read_keys, args=(session, descriptor), name="rvm-live-keys",
                                 daemon=True).start()
            deadline = None if duration is None else time.perf_counter() + duration
            while not session.wait(STATUS_EVERY_S):
                snapshot = session.stats()
                if stats_path is not None:
                    write_stats(stats_path, snapshot)
                if show_status and tty:
                    print("\r" + status_line(snapshot), end="", file=sys.stderr, flush=True)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        except KeyboardInterrupt:
            log.info("interrupted: closing every sink")
        finally:
            with on_signals(lambda number, frame: log.warning(
                    "still closing the sinks: recordings are being finalised (at most %g s)", session.stop_timeout_s)):
                if show_status and tty:
                    print(file=sys.stderr)
                try:
                    session.stop()
                finally:
                    snapshot = session.stats()
                    if stats_path is not None:
                        write_stats(stats_path, snapshot)
    return snapshot


def command(args) -> int:
    from rvm.live.session import LiveSession
    from rvm.live.sources import open_live_source
    from rvm.live.stats import status_line
    stats_path = Path(args.stats) if args.stats else None
    if stats_path is not None and not stats_path.parent.is_dir():
        raise UsageError(f"the folder of --stats {stats_path} does not exist: create it first")
    request = convert_request(args)
    if args.benchmark:
        return benchmark(args, request, stats_path)
    source = open_live_source(request.input_source, args.resolution, args.fps, args.loop)
    sinks = build_sinks(args, request, source.name)
    if not sinks:
        raise UsageError("no sink: pass at least one of --virtual-camera, --preview, --page, --output-composition, "
                         "--output-alpha, --output-foreground, --output-rgba, --raw-stdout")
    runtime = load_model(args, request, source)
    try:
        session = LiveSession(source, runtime, sinks, request.downsample_ratio, args.reconnect_seconds)
        snapshot = run_session(session, args.duration, stats_path, show_status=True)
    finally:
        runtime.close()
    print(status_line(snapshot), file=sys.stderr)
    return 0


def benchmark(args, request, stats_path) -> int:
    """A paced source into a sink that renders the RGBA frame (the work every sink does) and discards it."""
    from rvm.live.session import LiveSession
    from rvm.live.sinks import RawSink
    from rvm.live.sources import FileSource, open_live_source
    from rvm.media.samples import default_clip
    clip = request.input_source if request.input_source != "0" else default_clip()
    if clip is None:
        raise UsageError("--benchmark plays a video file: pass --input-source FILE (or set RVM_VALIDATION_CLIP)")
    source = open_live_source(clip, args.resolution, args.fps or 30, loop=True)
    if not isinstance(source, FileSource):
        raise UsageError(f"--benchmark plays a video file, not a camera or stream: {clip}")
    duration = args.duration or 20.0
    runtime = load_model(args, request, source)
    with open(os.devnull, "wb") as discard:
        try:
            sinks = [RawSink(discard, announce=False)]
            session = LiveSession(source, runtime, sinks, request.downsample_ratio, args.reconnect_seconds)
            snapshot = run_session(session, duration, stats_path, show_status=False)
        finally:
            runtime.close()
    sink = snapshot["sinks"]["raw"]
    dropped = 1 - sink["delivered"] / snapshot["captured"] if snapshot["captured"] else 0.0
    result = {"model": request.model or DEFAULT_CHECKPOINT, "size": snapshot["source"]["size"],
              "source_fps": snapshot["source"]["fps"], "downsample_ratio": snapshot["downsample_ratio"],
              "seconds": snapshot["seconds"], "delivered_fps": round(sink["delivered"] / snapshot["seconds"], 2),
              "dropped_share": round(dropped, 3), "latency_ms_p50": sink["latency_ms_p50"],
              "latency_ms_p95": sink["latency_ms_p95"], "model_ms_p50": snapshot["model_ms_p50"]}
    print(json.dumps(result))
    return 0

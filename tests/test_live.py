"""`rvm live` and `rvm.live`: a fake camera (the sample clip paced at 30 fps, as a camera delivers it) through a real
ONNX artifact into real sinks. Checked: the delivered alpha against PyTorch run over the frames inference took, with
the state carried (within the ONNX fp32 bounds, which a state dropped every frame fails); a model slowed on purpose
drops frames and keeps latency bounded; memory stays flat over 3,000 frames; a recording interrupted by Ctrl+C is
finalised and playable; raw RGBA on stdout; sinks that cannot start fail in one line before capture.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from rvm import formats
from rvm.compare import ComparisonAccumulator
from rvm.live import FileSource, LiveSession, LiveSink, RawSink, RecordingSink
from rvm.live.session import NewestSlot
from rvm.media.video import read_frames, read_rgba
from rvm.runtimes import load

from .conftest import CLIPS, OFFICIAL_ONNX, dgf_model, need, pytorch_outputs

SIZE, RATIO = (324, 184), 0.5  # person_a upscaled 2x, as export validation runs it
CAMERA_FPS = 30


@pytest.fixture(scope="module")
def clip():
    return need(CLIPS / "person_a.mp4")


@pytest.fixture(scope="module")
def onnx_model():
    """The official fp32 ONNX download, read in place: the weights `dgf_model` holds came from it (no export to
    wait for in each live test module)."""
    return need(OFFICIAL_ONNX)


@pytest.fixture
def runtime(onnx_model):
    with load(onnx_model, device="cpu", threads=1) as opened:
        yield opened


class Kept(LiveSink):
    """A sink that keeps what it was given (the frames a virtual camera or page would show)."""

    name = "kept"

    def __init__(self):
        self.frames = []

    def write(self, matted):
        self.frames.append((matted.index, matted.chunk.fgr.copy(), matted.chunk.pha.copy()))


class Recorded:
    """A real runtime that remembers every input it was given (and, with `delay`, is slow on purpose)."""

    def __init__(self, runtime, delay: float = 0.0):
        self.runtime, self.delay, self.inputs = runtime, delay, []

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def run_nchw(self, src, downsample_ratio=None):
        self.inputs.append(src.copy())
        if self.delay:
            time.sleep(self.delay)
        return self.runtime.run_nchw(src, downsample_ratio)


def run_until(session, done, timeout=120):
    session.start()
    try:
        deadline = time.perf_counter() + timeout
        while not done(session.stats()) and not session.wait(0.05):
            assert time.perf_counter() < deadline, session.stats()
    finally:
        session.stop()
    return session.stats()


def test_newest_slot_keeps_the_newest_and_counts_what_it_replaced():
    slot, stopped = NewestSlot(), threading.Event()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never read: dropped
    assert slot.get(stopped) == 2
    stopped.set()
    assert slot.get(stopped) is not None  # END once stopped, not a stale item


def test_file_source_is_paced_at_its_frame_rate(clip):
    source = FileSource(clip, SIZE, fps=CAMERA_FPS)
    source.open()
    started = time.perf_counter()
    frames = sum(1 for _ in source.frames())
    elapsed = time.perf_counter() - started
    source.close()
    assert frames == 58
    assert elapsed >= (frames - 1) / CAMERA_FPS * 0.95  # never faster than a camera (a floor, not a speed target)


def test_delivered_alpha_matches_pytorch_over_the_frames_taken(clip, runtime):
    recorded, kept = Recorded(runtime), Kept()
    session = LiveSession(FileSource(clip, SIZE, fps=CAMERA_FPS), recorded, [kept], RATIO)
    stats = run_until(session, lambda s: s["matted"] >= 12)  # 12 frames keep the PyTorch reference short
    assert stats["matted"] == len(recorded.inputs) >= 12
    assert stats["captured"] - 1 <= stats["matted"] + stats["dropped"] <= stats["captured"]  # one may be in flight
    reference = pytorch_outputs(dgf_model(), recorded.inputs, RATIO)  # the state carried over the frames taken
    runtime.reset()
    state_zeroed = []  # what a live path that loses the state between frames would deliver
    for src in recorded.inputs:
        runtime.reset()
        state_zeroed.append(runtime.run_nchw(src, RATIO))
    bounds = formats.get("onnx").tolerance("fp32")

    def failures(delivered):
        comparison = ComparisonAccumulator()
        for index, fgr, pha in delivered:
            comparison.add({"fgr": fgr, "pha": pha}, {"fgr": reference[index][0], "pha": reference[index][1]})
        return bounds.failures(comparison.result())

    assert len(kept.frames) >= 8 and [i for i, _, _ in kept.frames] == sorted({i for i, _, _ in kept.frames})
    assert np.mean([pha.mean() for _, _, pha in kept.frames]) > 0.05, "the person must be matted"
    assert failures(kept.frames) == []
    broken = [(index, *state_zeroed[index]) for index, _, _ in kept.frames]
    assert failures(broken), "the bounds must reject a state dropped every frame"


def test_a_slow_model_drops_stale_frames_and_latency_stays_bounded(clip, runtime, tmp_path):
    delay = 0.1  # a model at under 10 fps behind a 30 fps camera
    kept, recording = Kept(), RecordingSink(tmp_path / "alpha.mp4", "alpha")
    session = LiveSession(FileSource(clip, (160, 96), fps=CAMERA_FPS, loop=True), Recorded(runtime, delay),
                          [kept, recording], RATIO)
    stats = run_until(session, lambda s: s["matted"] >= 25)
    assert stats["dropped"] >= stats["matted"]  # about two of every three frames never reach the model
    # the recording keeps real time: its frames are stamped with their capture times, gaps where frames dropped
    with av.open(str(tmp_path / "alpha.mp4")) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        seconds = float(container.duration) / av.time_base
    assert frames == stats["sinks"]["recording-alpha"]["delivered"]
    assert seconds >= 2 * frames / CAMERA_FPS, (seconds, frames)
    # a queue would grow by 2 frames per matted one (> 1 s behind by now); one slot per stage keeps it at about
    # capture interval + model time + sink time
    assert stats["latency_ms_p95"] < 1000 * (2 * delay + 3 / CAMERA_FPS + 0.2), stats


def rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) * 1024


@pytest.mark.slow
def test_memory_stays_flat_over_3000_frames(clip, runtime, tmp_path):
    """A small fast configuration (80x48, unpaced) so 3,000 frames take seconds; peak RSS sampled every 10 ms."""
    with open(os.devnull, "wb") as discard:
        sinks = [RawSink(discard), RecordingSink(tmp_path / "alpha.mp4", "alpha")]
        session = LiveSession(FileSource(clip, (80, 48), fps=2000, loop=True), runtime, sinks, RATIO)
        peaks, done = {}, threading.Event()

        def sample():
            peak = 0
            while not done.is_set():
                peak = max(peak, rss())
                matted = session.live_stats.matted
                for mark in (500, 3000):
                    if matted >= mark and mark not in peaks:
                        peaks[mark] = peak
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stats = run_until(session, lambda s: 3000 in peaks, timeout=180)
        done.set()
        sampler.join()
    assert stats["matted"] >= 3000 and stats["resets"] >= 50  # the clip looped (58 frames), resetting the state
    assert peaks[3000] <= 1.1 * peaks[500], peaks
    assert len(read_frames(tmp_path / "alpha.mp4", 5)) == 5


# ---- the command -------------------------------------------------------------------------------------

def rvm(*args, env=None, **kwargs):
    env = env or {k: v for k, v in os.environ.items() if not k.startswith("RVM_")}
    # a test run started in the background (`nohup ... &`, as one CI run was) ignores SIGINT, and children inherit
    # that: their Ctrl+C then does nothing at all (what hung the Ctrl+C test for 60 s in that run). This child gets
    # the default back, so its Python turns Ctrl+C into KeyboardInterrupt as in a terminal
    return subprocess.Popen([sys.executable, "-m", "rvm.commands.cli", "live", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def finished(process, timeout: float = 60):
    """(stdout, stderr) of `process` once it exits; killed (never left running) and failed if it does not."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"rvm live did not exit within {timeout:g} s:\n{err.decode()[-3000:]}")


def test_ctrl_c_during_a_recording_leaves_playable_files(clip, onnx_model, tmp_path):
    stats = tmp_path / "stats.json"
    process = rvm("--input-source", clip, "--loop", "--resolution", "160x96", "--model", onnx_model,
                  "--output-composition", tmp_path / "c.mp4", "--output-rgba", tmp_path / "rgba.mov",
                  "--background", "blur", "--stats", stats, cwd=tmp_path)
    deadline = time.perf_counter() + 120
    while not _delivered(stats):
        assert process.poll() is None, process.communicate()
        assert time.perf_counter() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = finished(process)
    assert process.returncode == 0, err.decode()
    assert "interrupted: closing every sink" in err.decode()
    composition = read_frames(tmp_path / "c.mp4")
    rgba = read_rgba(tmp_path / "rgba.mov")
    assert len(composition) >= 10 and composition[0].shape == (96, 160, 3)
    assert len(rgba) >= 10 and rgba[0].shape == (96, 160, 4) and rgba[-1][..., 3].std() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial files left


def read_stats(stats: Path) -> dict:
    try:
        return json.loads(stats.read_text())
    except (OSError, ValueError):
        return {}


def _delivered(stats: Path, frames: int = 10) -> bool:
    sinks = read_stats(stats).get("sinks")
    return bool(sinks) and min(sink["delivered"] for sink in sinks.values()) >= frames


def wait_for(process, condition, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"rvm live ended early: {process.communicate()[1].decode()[-3000:]}")
        if time.perf_counter() > deadline:
            process.kill()
            pytest.fail(f"rvm live: not seen within {timeout:g} s: {process.communicate()[1].decode()[-3000:]}")
        time.sleep(0.2)


class Interrupting(RecordingSink):
    """A recording that stops the session as `kill` does (SIGTERM, at its 5th frame) and, like an impatient user,
    presses Ctrl+C again while it is being finalised."""

    unhandled = False

    def write(self, matted):
        super().write(matted)
        if self._sink.frames == 5:
            if signal.getsignal(signal.SIGTERM) is not signal.default_int_handler:  # not run_session's: raising
                self.unhandled = True  # SIGTERM would end the test run itself (or run another library's handler)
            else:
                signal.raise_signal(signal.SIGTERM)

    def close(self):
        signal.raise_signal(signal.SIGINT)  # raised in this thread (the main one): its handler runs right here
        super().close()


def sigterm_scenario(clip: str, model: str, folder: str) -> None:
    """The SIGTERM test's body, run in a process of its own: signals raised for real must meet a fresh process's
    handlers (in the full suite Ray, from test_batch, leaves C++ and Python handlers behind) and must not be able to
    end the test run. Prints run_session's snapshot as JSON."""
    from rvm.commands.live import run_session
    sink = Interrupting(Path(folder) / "alpha.mp4", "alpha")
    with load(model, device="cpu", threads=1) as runtime:
        session = LiveSession(FileSource(clip, (80, 48), fps=CAMERA_FPS, loop=True), runtime, [sink], RATIO)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started us
        try:
            snapshot = run_session(session, duration=20, stats_path=None, show_status=False)
        except KeyboardInterrupt:
            snapshot = {"error": "the second Ctrl+C broke off the stop: the recording was not finalised"}
    print(json.dumps({**snapshot, "unhandled": sink.unhandled}))


def test_sigterm_stops_and_a_second_ctrl_c_does_not_cut_the_recording_short(clip, onnx_model, tmp_path):
    code = f"from tests.test_live import sigterm_scenario; sigterm_scenario({str(clip)!r}, {str(onnx_model)!r}, " \
           f"{str(tmp_path)!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    snapshot = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in snapshot, snapshot["error"]
    assert not snapshot["unhandled"], "run_session did not take SIGTERM over"
    assert snapshot["seconds"] < 15  # stopped by SIGTERM, not by the duration
    assert len(read_frames(tmp_path / "alpha.mp4")) == snapshot["sinks"]["recording-alpha"]["delivered"] >= 5
    assert [p.name for p in tmp_path.iterdir()] == ["alpha.mp4"]  # finalised in place: no temporary left


class Hung(LiveSink):
    """A sink whose write never returns until released (a pipe nobody reads, a hung device)."""

    name = "hung"

    def __init__(self):
        self.release_write, self.closed = threading.Event(), False

    def write(self, matted):
        self.release_write.wait()

    def close(self):
        self.closed = True


def test_stop_is_bounded_when_a_sink_hangs_and_the_others_are_finalised(clip, runtime, tmp_path):
    from rvm.live.session import SinkStuck
    hung, recording = Hung(), RecordingSink(tmp_path / "alpha.mp4", "alpha")
    session = LiveSession(FileSource(clip, (80, 48), fps=CAMERA_FPS, loop=True), runtime, [hung, recording], RATIO)
    session.stop_timeout_s = 1.0
    session.start()
    try:
        deadline = time.perf_counter() + 60
        while session.stats()["sinks"]["recording-alpha"]["delivered"] < 5:
            assert time.perf_counter() < deadline
            time.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(SinkStuck, match="hung did not finish writing within 1 s"):
            session.stop()
        assert time.perf_counter() - started < 30  # bounded (1 s of waiting, then the recording's close)
    finally:
        hung.release_write.set()
    assert not hung.closed  # never closed under the thread still writing to it
    assert len(read_frames(tmp_path / "alpha.mp4")) >= 5


def test_keys_on_stdin_reset_the_state_and_stop(clip, onnx_model, tmp_path):
    """`r` + Enter and `q` + Enter, written to the command's stdin as a terminal would send them."""
    stats = tmp_path / "stats.json"
    # 58 frames at 10 fps: the clip loops (a reset of its own) only after 5.8 s
    process = rvm("--input-source", clip, "--loop", "--fps", "10", "--resolution", "80x48", "--model", onnx_model,
                  "--output-alpha", "alpha.mp4", "--stats", stats, cwd=tmp_path, stdin=subprocess.PIPE)
    wait_for(process, lambda: _delivered(stats, 3))
    process.stdin.write(b"r\n")
    process.stdin.flush()
    wait_for(process, lambda: read_stats(stats).get("resets", 0) >= 1)
    assert read_stats(stats)["captured"] < 58, "the reset must come from the key, not from the clip's loop"
    process.stdin.write(b"q\n")
    process.stdin.flush()
    _, err = finished(process)
    assert process.returncode == 0, err.decode()
    assert "recurrent state reset" in err.decode()
    assert len(read_frames(tmp_path / "alpha.mp4")) >= 3


@pytest.mark.slow
def test_model_auto_runs_the_tuned_artifact_without_tuning_again(clip, tuned_user, tmp_path):
    """`--model auto` for a size the suite's one tune recorded (conftest's `tuned_user`): the recorded artifact."""
    folder, cache, env, done, _ = tuned_user
    record = json.loads(Path(next(line.split(": ", 1)[1] for line in done.stdout.splitlines()
                                  if line.startswith("record: "))).read_text())
    stats = tmp_path / "stats.json"
    process = rvm("--input-source", clip, "--resolution", "320x192", "--downsample-ratio", "0.5", "--fps", "60",
                  "--model", "auto", "--output-alpha", tmp_path / "alpha.mp4", "--stats", stats, cwd=folder,
                  env={k: v for k, v in env.items() if not k.startswith("RVM_")})
    _, err = finished(process, 300)
    assert process.returncode == 0, err.decode()
    assert f"--model auto at 320x192: {record['choice']['fast']['artifact']}" in err.decode()
    assert "tuning now" not in err.decode()
    assert read_stats(stats)["matted"] >= 5 and read_stats(stats)["downsample_ratio"] == 0.5


def test_raw_rgba_on_stdout_with_its_size_on_stderr(clip, onnx_model, tmp_path):
    process = rvm("--input-source", clip, "--resolution", "160x96", "--fps", "60", "--model", onnx_model,
                  "--raw-stdout", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert "raw RGBA 160x96 at 60 fps on stdout" in err.decode()
    frames = np.frombuffer(out, np.uint8).reshape(-1, 96, 160, 4)
    assert 5 <= len(frames) <= 58 and frames[..., 3].std() > 0


def test_sinks_that_cannot_start_fail_in_one_line_before_capture(clip, onnx_model, tmp_path):
    (tmp_path / "taken.mp4").write_bytes(b"")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {("--page", "--port", port): f"port {port} on 127.0.0.1 is in use",
                 ("--output-alpha", "taken.mp4"): "already exists: pass --overwrite"}
        if not any(Path("/sys/class/video4linux").glob("video*")):
            cases[("--virtual-camera",)] = "sudo modprobe v4l2loopback"
        cases[("--preview",)] = "no display for --preview: "  # as on a server or over ssh without X forwarding
        no_display = {k: v for k, v in os.environ.items() if not k.startswith("RVM_") and k != "DISPLAY"}
        for flags, message in cases.items():
            process = rvm("--input-source", clip, "--model", onnx_model, *flags, cwd=tmp_path, env=no_display)
            _, err = process.communicate(timeout=120)
            lines = err.decode().strip().splitlines()
            assert process.returncode == 2 and message in lines[-1] and lines[-1].startswith("rvm: error:"), lines
            assert not any("source" in line for line in lines), lines  # nothing was captured
    assert (tmp_path / "taken.mp4").read_bytes() == b""


def test_benchmark_prints_delivered_fps_drops_and_latency(clip, onnx_model, tmp_path):
    process = rvm("--benchmark", "--input-source", clip, "--model", onnx_model, "--resolution", "160x96",
                  "--downsample-ratio", "0.5", "--duration", "3", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["size"] == "160x96" and result["source_fps"] == 30 and result["downsample_ratio"] == 0.5
    assert result["delivered_fps"] > 0 and 0 <= result["dropped_share"] < 1
    assert result["latency_ms_p50"] <= result["latency_ms_p95"]


def test_cameras_and_streams_map_to_ffmpeg_inputs():
    """What `--input-source` opens on each system (no camera here: the mapping is what can be checked)."""
    from rvm.errors import UsageError
    from rvm.live.sources import capture_input
    assert capture_input("0", "Linux") == ("/dev/video0", "v4l2")
    assert capture_input("/dev/video2", "Linux") == ("/dev/video2", "v4l2")
    assert capture_input("1", "Darwin") == ("1:none", "avfoundation")
    assert capture_input("video=Integrated Camera", "Windows") == ("video=Integrated Camera", "dshow")
    for url in ("rtsp://cam.local/stream", "http://127.0.0.1:8080/video", "udp://0.0.0.0:5000", "srt://host:9000"):
        assert capture_input(url, "Linux") == (url, None)
    with pytest.raises(UsageError, match="DirectShow opens cameras by name"):
        capture_input("0", "Windows")
    with pytest.raises(UsageError, match="neither a camera"):
        capture_input("missing.mp4", "Linux")

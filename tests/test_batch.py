"""`rvm batch` end to end on real clips and the official ONNX: the local pool and a local Ray cluster, each with a
worker killed in the middle of a job; re-runs that skip finished jobs; a manifest with bad entries; bad input.

Every output is compared with a plain `convert_video` run of the same clip on the same runtime: PNG sequences
bit-exact, ProRes RGBA videos decoded frame-exact, and no temporary or duplicate file may remain.
"""
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rvm.batch.driver import SUMMARY_NAME, batch_convert
from rvm.batch.jobs import STATE_FOLDER, BatchError, BatchRequest, ledger_path, plan_jobs, read_manifest
from rvm.commands.cli import main
from rvm.media.convert import ConvertRequest, convert_video
from rvm.media.video import VideoSink, read_frames, read_rgba

from .conftest import CLIPS, OFFICIAL_ONNX, need

OUTPUTS = ("alpha", "rgba")  # a PNG-sequence matte (bit-exact) and a ProRes 4444 video (decoded frame-exact)
LONG = "person_ab"  # 116 frames: the job a worker is killed in


@pytest.fixture(scope="module")
def model():
    return str(need(OFFICIAL_ONNX))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three real clips: person_b and person_c (58 frames each) and person_a followed by itself reversed."""
    folder = tmp_path_factory.mktemp("inputs")
    for name in ("person_b", "person_c"):
        os.symlink(need(CLIPS / f"{name}.mp4"), folder / f"{name}.mp4")
    frames = read_frames(need(CLIPS / "person_a.mp4"))
    with VideoSink(folder / f"{LONG}.mp4", 20, (frames[0].shape[1], frames[0].shape[0])) as sink:
        for frame in frames + frames[::-1]:
            sink.write(frame)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, clips, model):
    """Each clip through one plain `convert_video` on a one-thread ONNX Runtime (as a batch worker runs it)."""
    from rvm import runtimes
    folder = tmp_path_factory.mktemp("reference")
    runtime = runtimes.load(model, device="cpu", intra_op_threads=1)
    for clip in sorted(clips.glob("*.mp4")):
        convert_video(ConvertRequest(clip, output_type="png_sequence", output_alpha=folder / f"{clip.stem}.alpha",
                                     output_rgba=folder / f"{clip.stem}.rgba.mov", progress=False), runtime)
    return folder


def ledger_records(output_dir: Path) -> list:
    path = ledger_path(output_dir)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_mid_job(output_dir: Path, name: str, done: threading.Event, after_frames: int) -> dict:
    """Wait until the ledger shows the job of `name` running with `after_frames` done, then SIGKILL its worker."""
    # two spawned workers import torch and load the model first: slow on a busy machine
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not done.is_set():
        running = [r for r in ledger_records(output_dir)
                   if r["state"] == "running" and Path(r["input"]).stem == name and r["frames"] >= after_frames]
        if running:
            os.kill(running[-1]["pid"], signal.SIGKILL)
            return running[-1]
        time.sleep(0.02)
    raise AssertionError(f"the {name} job never showed running frames in the ledger before the batch ended")


def png_sequences(model: str) -> ConvertRequest:
    """What the batches here ask of each job: PNG sequences (compared exactly), no progress bar."""
    return ConvertRequest(output_type="png_sequence", model=model, progress=False)


def run_with_kill(output_dir: Path, after_frames: int, model: str, **batch_options):
    """The batch on a thread; the test's thread kills the worker of the long job when it is mid-way."""
    outcome, done = {}, threading.Event()

    def run():
        try:
            outcome["result"] = batch_convert(BatchRequest(output_dir=output_dir, convert=png_sequences(model),
                                                           outputs=OUTPUTS, **batch_options))
        finally:
            done.set()
    thread = threading.Thread(target=run)
    thread.start()
    killed = kill_mid_job(output_dir, LONG, done, after_frames)
    thread.join(300)
    assert "result" in outcome, "the batch raised (see the thread's traceback above)"
    return outcome["result"], killed


def assert_outputs_exact(output_dir: Path, reference: Path, clips: Path) -> None:
    names = sorted(clip.stem for clip in clips.glob("*.mp4"))
    expected = {f"{n}.alpha" for n in names} | {f"{n}.rgba.mov" for n in names} | {STATE_FOLDER, SUMMARY_NAME}
    assert set(os.listdir(output_dir)) == expected  # no temporary, partial or duplicate entry
    for name in names:
        alpha, want = output_dir / f"{name}.alpha", reference / f"{name}.alpha"
        assert sorted(os.listdir(alpha)) == sorted(os.listdir(want))
        for png in os.listdir(want):
            assert (alpha / png).read_bytes() == (want / png).read_bytes(), f"{name} {png}"
        frames = read_rgba(output_dir / f"{name}.rgba.mov")  # a complete, decodable video with every frame
        assert len(frames) == len(os.listdir(want))
        assert np.array_equal(np.stack(frames), np.stack(read_rgba(reference / f"{name}.rgba.mov"))), name


def check_killed_job(result, killed: dict, reason: str) -> None:
    assert result.succeeded, result.jobs
    jobs = {Path(job["input"]).stem: job for job in result.jobs}
    assert jobs[LONG]["attempts"] == 2 and jobs[LONG]["frames"] == 116
    assert all(jobs[name]["attempts"] == 1 for name in ("person_b", "person_c"))
    assert jobs[LONG]["worker"] != killed["worker"]  # redone by a new worker, the killed one is gone


def check_ledger(output_dir: Path, killed: dict, reason: str) -> None:
    records = ledger_records(output_dir)
    failed = [r for r in records if r["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["job"] == killed["job"] and reason in failed[0]["reason"]
    assert not failed[0]["final"]
    done = [r for r in records if r["state"] == "done"]
    assert len(done) == 3 and len({r["job"] for r in done}) == 3  # each job finished exactly once


def test_local_pool_redoes_the_job_of_a_killed_worker_from_its_last_segment(tmp_path, clips, reference, model):
    """Segments of 20 frames: the long job (116 frames) is killed after 45, in its third segment; the new attempt
    reuses the two finished ones, carries their state on, and the joined outputs equal one whole run."""
    output_dir = tmp_path / "out"
    result, killed = run_with_kill(output_dir, 45, inputs=[str(clips)], model=model, workers=2, segment_frames=20)
    check_killed_job(result, killed, "killed by signal 9")
    long_job = next(job for job in result.jobs if Path(job["input"]).stem == LONG)
    assert long_job["segments"] == 6 and long_job["reused_segments"] >= 2
    check_ledger(output_dir, killed, "worker process died (killed by signal 9)")
    assert_outputs_exact(output_dir, reference, clips)
    summary = json.loads((output_dir / SUMMARY_NAME).read_text())
    assert summary["counts"] == {"done": 3} and summary["frames"] == 232
    for job in summary["jobs"]:
        assert job["backend"] == "onnx" and job["executor"] == "local" and job["frames_per_second"] > 0

    # the same command again: every job skipped, no output touched
    stamps = {p: p.stat().st_mtime_ns for p in output_dir.iterdir()}
    again = batch_convert(BatchRequest([str(clips)], output_dir, png_sequences(model), outputs=OUTPUTS))
    assert again.counts == {"skipped": 3}
    assert all(p.stat().st_mtime_ns == stamps[p] for p in stamps if p.name not in (SUMMARY_NAME, STATE_FOLDER))


def test_segments_without_the_carried_state_would_differ(tmp_path, clips, reference, model):
    """What the carried state buys: the second segment started from zero state gives other mattes than a whole run
    (so the equality the segmented batch shows above could fail), and from the first segment's state the same."""
    from rvm import runtimes
    runtime = runtimes.load(model, device="cpu", intra_op_threads=1)
    clip = clips / "person_b.mp4"
    first = convert_video(ConvertRequest(clip, output_type="png_sequence", output_alpha=tmp_path / "first",
                                         progress=False), runtime, frame_range=(0, 20))
    for name, state in (("zero", None), ("carried", first.state)):
        convert_video(ConvertRequest(clip, output_type="png_sequence", output_alpha=tmp_path / name, progress=False),
                      runtime, frame_range=(20, 40), initial_state=state)
    whole = np.stack(read_frames(reference / "person_b.alpha"))[20:40]
    assert np.array_equal(np.stack(read_frames(tmp_path / "carried")), whole)
    zero = np.stack(read_frames(tmp_path / "zero")).astype(int)
    assert np.abs(zero - whole).max() > 50  # a fresh state takes frames to settle: visibly different mattes


def test_segmented_video_with_audio_joins_whole(tmp_path, model):
    """H.264 parts remuxed into one file with the source's audio: every frame, decodable, the audio kept."""
    import av

    from .video_helpers import short_clip
    clip = short_clip(tmp_path, "person_c", frames=30, audio=True)
    result = batch_convert(BatchRequest([str(clip)], tmp_path / "out", ConvertRequest(model=model, progress=False),
                                        outputs=("alpha", "composition"), segment_frames=8, workers=1))
    (job,) = result.jobs
    assert job["outcome"] == "done" and job["segments"] == 4
    for kind in ("alpha", "composition"):
        path = tmp_path / "out" / f"{clip.stem}.{kind}.mp4"
        assert len(read_frames(path)) == 30
        with av.open(str(path)) as joined, av.open(str(clip)) as source:
            assert joined.streams.audio and joined.streams.video[0].frames == 30
            assert abs(float(joined.streams.audio[0].duration * joined.streams.audio[0].time_base)
                       - float(source.streams.audio[0].duration * source.streams.audio[0].time_base)) < 0.05
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [STATE_FOLDER, SUMMARY_NAME, f"{clip.stem}.alpha.mp4", f"{clip.stem}.composition.mp4"])
    assert not os.listdir(tmp_path / "out" / STATE_FOLDER / "parts")  # joined parts are removed


def test_rerun_after_a_crash_redoes_only_unfinished_jobs(tmp_path, clips, reference, model):
    """A ledger that ends with a job running (the driver died) and that job's temporaries on disk."""
    output_dir = tmp_path / "out"
    first = batch_convert(BatchRequest([str(clips / "person_b.mp4")], output_dir, png_sequences(model),
                                       outputs=OUTPUTS, workers=1))
    assert first.counts == {"done": 1}
    jobs = plan_jobs(BatchRequest([str(clips / "person_c.mp4")], output_dir, png_sequences(model), outputs=OUTPUTS))
    with open(ledger_path(output_dir), "a") as ledger:
        ledger.write(json.dumps({"job": jobs[0].id, "input": jobs[0].input, "state": "running", "frames": 9}) + "\n")
        ledger.write('{"job": "torn')  # the driver died mid-line
    (output_dir / ".person_c.alpha.partial-abcd1234").mkdir()
    (output_dir / ".person_c.alpha.partial-abcd1234" / "0000.png").write_bytes(b"half")
    (output_dir / ".person_c.rgba.partial-0f0f0f0f.mov").write_bytes(b"half")
    (output_dir / "person_c.alpha").mkdir()  # a finished output of the unfinished job: its own to replace
    again = batch_convert(BatchRequest([str(clips / "person_b.mp4"), str(clips / "person_c.mp4")], output_dir,
                                       png_sequences(model), outputs=OUTPUTS, workers=1))
    assert {Path(j["input"]).stem: j["outcome"] for j in again.jobs} == {"person_b": "skipped", "person_c": "done"}
    assert not [p for p in os.listdir(output_dir) if ".partial-" in p]
    for png in os.listdir(reference / "person_c.alpha"):
        assert (output_dir / "person_c.alpha" / png).read_bytes() == (reference / "person_c.alpha" / png).read_bytes()


def test_ctrl_c_keeps_nothing_partial_and_the_rerun_finishes(tmp_path, clips, reference, model):
    """`rvm batch` interrupted mid-job: exit 130, the running jobs recorded interrupted, no temporary left; the same
    command again completes every job, frame-exact."""
    import subprocess
    import sys
    command = [sys.executable, "-m", "rvm.commands.cli", "batch", str(clips), "-o", str(tmp_path / "out"),
               "--model", model,
               "--outputs", ",".join(OUTPUTS), "--output-type", "png_sequence", "--workers", "2",
               "--disable-progress"]
    # a test run started in the background (`nohup ... &`) ignores SIGINT, and children inherit that: this child gets
    # the default back, so its Python turns Ctrl-C into KeyboardInterrupt as in a terminal
    batch = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # two spawned workers import torch and load the model first: slow on a busy machine
    deadline = time.monotonic() + 600
    # interrupt at a job's first frame: waiting for 5 let the last job finish before the signal in one CI run (exit 0)
    while not any(r["state"] == "running" for r in ledger_records(tmp_path / "out")):
        assert batch.poll() is None and time.monotonic() < deadline, "the batch ended before it could be interrupted"
        time.sleep(0.02)
    batch.send_signal(signal.SIGINT)
    _, errors = batch.communicate(timeout=300)
    assert batch.returncode == 130, errors
    assert "interrupted" in errors
    # every job the ledger saw ends done or interrupted, never left "running" (a job may finish in the moment
    # between the last progress line and the signal: its record is then "done", as it should be)
    last = {}
    for record in ledger_records(tmp_path / "out"):
        last[record["job"]] = record["state"]
    assert set(last.values()) <= {"done", "interrupted"}, last
    assert not [p for p in os.listdir(tmp_path / "out") if ".partial-" in p or ".old-" in p]
    subprocess.run(command, check=True, capture_output=True)
    assert_outputs_exact(tmp_path / "out", reference, clips)


def test_manifest_with_bad_entries_finishes_the_good_ones(tmp_path, clips, reference, model, capsys):
    (tmp_path / "not_a_video.mp4").write_bytes(b"this is text, not a video")
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in [
        {"input": str(clips / "person_b.mp4"), "alpha": "b/alpha", "output_type": "png_sequence"},
        {"input": "not_a_video.mp4", "alpha": "bad.mp4"},
        {"input": "missing.mp4", "alpha": "missing.mp4"},
        {"input": str(clips / "person_c.mp4"), "alpha": "c_alpha.mp4", "output_video_mbps": 1},
    ]) + "\n")
    code = main(["batch", "--manifest", str(manifest), "-o", str(tmp_path / "out"), "--model", model,
                 "--retries", "1", "--disable-progress"])
    assert code == 1  # not all succeeded
    errors = capsys.readouterr().err
    assert "not_a_video.mp4" in errors and "missing.mp4" in errors
    summary = {Path(j["input"]).name: j for j in json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())["jobs"]}
    assert summary["person_b.mp4"]["outcome"] == summary["person_c.mp4"]["outcome"] == "done"
    for bad in ("not_a_video.mp4", "missing.mp4"):
        assert summary[bad]["outcome"] == "failed" and summary[bad]["attempts"] == 2  # retried once, then given up
        assert "\n" not in summary[bad]["reason"] and bad in summary[bad]["reason"]
    for png in os.listdir(reference / "person_b.alpha"):
        assert (tmp_path / "out/b/alpha" / png).read_bytes() == (reference / "person_b.alpha" / png).read_bytes()
    assert len(read_frames(tmp_path / "out" / "c_alpha.mp4")) == 58
    assert sorted(os.listdir(tmp_path / "out")) == [STATE_FOLDER, "b", "c_alpha.mp4", SUMMARY_NAME]


@pytest.mark.parametrize("case", ["unreadable manifest", "bad manifest row", "glob without match",
                                  "unreachable ray", "output folder not writable", "output folder under a file"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, clips, model, capsys, case):
    clip = str(clips / "person_b.mp4")
    out = tmp_path / "out"
    (tmp_path / "manifest.csv").write_text("input,alpha,colour\nx.mp4,x.mp4,red\n")
    (tmp_path / "a_file").write_text("")
    args = {"unreadable manifest": ["--manifest", str(tmp_path / "nowhere.csv"), "-o", str(out)],
            "bad manifest row": ["--manifest", str(tmp_path / "manifest.csv"), "-o", str(out)],
            "glob without match": [str(tmp_path / "*.mkv"), "-o", str(out)],
            "unreachable ray": [clip, "-o", str(out), "--ray", "127.0.0.1:9"],
            "output folder not writable": [clip, "-o", "/sys/rvm-batch-out"],
            "output folder under a file": [clip, "-o", str(tmp_path / "a_file" / "out")]}[case]
    if case == "output folder not writable" and not Path("/sys").is_dir():
        pytest.skip("no /sys here to stand for a folder nobody can write")
    before = sorted(os.listdir(tmp_path))
    assert main(["batch", *args, "--model", model, "--disable-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("rvm: error: ") and error.count("\n") == 1, error
    assert sorted(os.listdir(tmp_path)) == before and not Path("/sys/rvm-batch-out").exists()


def test_manifest_csv_options_are_typed(tmp_path):
    (tmp_path / "m.csv").write_text("input,alpha,input_resize,downsample_ratio,seq_chunk\na.mp4,a,80x46,0.5,2\n")
    (row,) = read_manifest(tmp_path / "m.csv")
    assert row == {"input": "a.mp4", "alpha": "a", "input_resize": "80x46", "downsample_ratio": "0.5", "seq_chunk": "2"}
    (job,) = plan_jobs(BatchRequest(manifest=tmp_path / "m.csv", output_dir=tmp_path / "o"))
    assert job.request.input_resize == (80, 46) and job.request.downsample_ratio == 0.5
    assert job.request.seq_chunk == 2 and job.outputs == {"alpha": str(tmp_path / "o" / "a")}
    (tmp_path / "bad.csv").write_text("input,seq_chunk\na.mp4,two\n")
    with pytest.raises(BatchError, match="seq_chunk"):
        plan_jobs(BatchRequest(manifest=tmp_path / "bad.csv", output_dir=tmp_path / "o"))


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from rvm.batch.ray_executor import OBJECT_STORE_BYTES
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_enable_metrics_collection", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_redoes_the_job_of_a_killed_actor(tmp_path, clips, reference, model, local_ray):
    output_dir = tmp_path / "out"
    result, killed = run_with_kill(output_dir, 5, inputs=[str(clips / "*.mp4")], model=model, use_ray=True,
                                   segment_frames=0)
    assert result.backend == "ray" and local_ray.is_initialized()  # a Ray it did not start is left running
    check_killed_job(result, killed, "Ray worker died")
    check_ledger(output_dir, killed, "Ray worker died")
    assert_outputs_exact(output_dir, reference, clips)
    assert {job["executor"] for job in result.jobs} == {"ray"}
    workers = {job["worker"] for job in result.jobs}
    assert killed["worker"] not in workers and killed["pid"] != os.getpid()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA GPUs here: one worker per GPU (test_batch_on_gpus)")
def test_local_pool_is_one_single_thread_worker_per_core_without_gpus():
    from rvm.batch.workers import THREADS_PER_WORKER, local_pool
    pool = local_pool("model.onnx")
    assert [(slot.device, slot.threads) for slot in pool.slots] == [("cpu", THREADS_PER_WORKER)] * os.cpu_count()
    assert [(slot.device, slot.threads) for slot in local_pool("model.onnx", workers=3, threads=2).slots] == \
        [("cpu", 2)] * 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_batch_on_gpus(tmp_path, clips, reference):
    """On a CUDA machine: one worker per GPU, each job on its GPU, the mattes as on the CPU within fp32 noise."""
    from .conftest import DGF_WEIGHTS
    result = batch_convert(BatchRequest([str(clips / "person_b.mp4")], tmp_path / "out",
                                        png_sequences(str(need(DGF_WEIGHTS))), outputs=("alpha",)))
    (job,) = result.jobs
    assert job["outcome"] == "done" and job["device"].startswith("cuda") and job["frames"] == 58
    alpha = np.stack(read_frames(tmp_path / "out" / "person_b.alpha")).astype(int)
    assert np.abs(alpha - np.stack(read_frames(reference / "person_b.alpha")).astype(int)).mean() < 1

"""`rvm bench` and `rvm parity` run end to end on a few frames (the numbers themselves are the
commands' output, not timed assertions: the machines are noisy)."""
import json

from rvm.commands.cli import main

from .conftest import CLIPS, DGF_WEIGHTS, need


def test_bench_json_reports_every_section(capsys):
    argv = ["bench", "--backends", "onnx,torchscript", "--checkpoint", str(need(DGF_WEIGHTS)),
            "--resolution", "160x96,192x108", "--downsample-ratio", "0.5", "--frames", "2", "--repeats", "1",
            "--e2e-frames", "6", "--e2e-repeats", "2", "--memory-frames", "4,8", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    rows = {(t["name"], t["precision"], t["resolution"]): t for t in result["tensor"]}
    for resolution in ("160x96", "192x108"):
        assert rows[("pytorch", "fp32", resolution)]["ratio_to_pytorch"] == 1.0
        for name, precision in (("onnx", "fp32"), ("onnx", "fp16"), ("onnx (official download)", "fp32"),
                                ("torchscript", "fp32"), ("torchscript", "fp16")):
            row = rows[(name, precision, resolution)]
            assert row["fps"] > 0 and row["ratio_to_pytorch"] > 0
        assert result["summary"][resolution]["our_onnx_fp32_over_official"] > 0
    # rows are proven at the first resolution, and the summary gives the two speeds over the official download
    for name, precision in (("onnx", "fp32"), ("onnx (official download)", "fp32"), ("torchscript", "fp32")):
        assert rows[(name, precision, "160x96")]["proven"] is True and rows[(name, precision, "160x96")]["mad"] < 0.01
        assert rows[(name, precision, "192x108")]["proven"] is None
    summary = result["summary"]["160x96"]
    for quality in ("proven", "exact"):
        name, precision = summary[f"fastest_{quality}"].rsplit(" ", 1)
        assert "official" not in name and rows[(name, precision, "160x96")]["proven"]
        assert summary[f"fastest_{quality}_over_official"] > 0
    assert rows[(*summary["fastest_exact"].rsplit(" ", 1), "160x96")]["mad"] <= 0.1
    assert "fastest_proven_over_official" not in result["summary"]["192x108"] or \
        result["summary"]["192x108"]["fastest_proven_over_official"] is None
    conversion = result["conversion"]
    assert conversion and all(c["frames"] == 6 and c["pipelined_fps"] > 0 and c["sequential_fps"] > 0
                              and c["plain_fps"] > 0 and c["speedup"] > 0 and c["speedup_over_sequential"] > 0
                              for c in conversion)
    for c in conversion:
        assert result["summary"]["160x96"][f"conversion_speedup_{c['name']}_{c['precision']}"] == c["speedup"]
        assert {k: len(v) for k, v in c["rounds"].items()} == {"plain": 2, "sequential": 2, "pipelined": 2}
    assert {s["graph_optimization"] for s in result["onnx_cpu_settings"]} == {"basic", "extended", "all"}
    assert [(s["freeze"], s["fps"] > 0) for s in result["torchscript_cpu_settings"]] == [(False, True), (True, True)]
    memory = result["peak_memory_mib"]
    assert memory["4"] > 0 and memory["8"] > 0 and memory["ratio_longest_to_shortest"] > 0


def test_parity_json_lists_rows_with_errors(capsys):
    argv = ["parity", "--backends", "pytorch,onnx", "--checkpoint", str(need(DGF_WEIGHTS)),
            "--clip", str(need(CLIPS / "person_b.mp4")), "--frames", "4", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["name"], r["precision"]): r for r in result["rows"]}
    assert rows[("pytorch", "fp32")]["status"] == "reference"
    for key in (("onnx", "fp32"), ("onnx", "fp16"), ("onnx (official download)", "fp32")):
        assert rows[key]["status"] == "ok" and rows[key]["frames"] == 4 and rows[key]["pha_max"] is not None


def test_parity_rejects_unknown_backend(capsys):
    assert main(["parity", "--backends", "onnx,caffe"]) == 2
    assert "unknown backend(s) caffe" in capsys.readouterr().err


def _report_peak(queue):
    from rvm.measure.bench import peak_rss_mib
    queue.put(peak_rss_mib())


def test_peak_memory_of_a_spawned_child_is_its_own():
    """ru_maxrss survives exec: a child spawned from a big parent must not report the parent's peak."""
    import multiprocessing

    import numpy as np

    from rvm.measure.bench import peak_rss_mib
    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB held by this process while the child runs
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_report_peak, args=(queue,))
    child.start()
    child.join()
    assert child.exitcode == 0
    assert queue.get() < peak_rss_mib() - 300 and ballast.sum() > 0


def test_bench_proof_rejects_a_row_with_its_state_zeroed(model, frames):
    """The proof behind `fastest_proven`: a runtime that loses its state every frame is not proven."""
    from rvm import formats
    from rvm.measure.bench import prove_rows
    from rvm.runtimes.pytorch import PyTorchRuntime
    from rvm.targets import REFERENCE

    from .artifact_helpers import StateZeroedEveryFrame
    entry = formats.get("torchscript")
    runtimes = {REFERENCE.key: PyTorchRuntime(model, device="cpu"), ("torchscript", "fp32"): PyTorchRuntime(model),
                ("broken", "fp32"): StateZeroedEveryFrame(PyTorchRuntime(model))}
    proofs = prove_rows(model, runtimes, {key: entry for key in runtimes}, frames[:12], 0.5, scene=False)
    assert proofs[("torchscript", "fp32")][0] is True and proofs[("torchscript", "fp32")][1] < 1e-6
    proven, mad, reason = proofs[("broken", "fp32")]
    assert proven is False and mad > 0.1 and "alpha" in reason

"""`rvm profile`: every block of PyTorch eager and of dynamic and static ONNX graphs gets its time, and what no block
owns stays small (node names must keep carrying module paths, or the int8 and speed reasoning built on it breaks)."""
import json

import pytest

from rvm.commands.cli import main
from rvm.exporters import ExportOptions
from rvm.measure.profile import (
    BLOCKS,
    OTHER,
    Peak,
    Work,
    block_of_node,
    block_work,
    machine_peak,
    onnx_profile,
    pytorch_profile,
)

from .conftest import DGF_WEIGHTS, need

SIZE, RATIO, FRAMES = (320, 184), 0.5, 2
MAX_OTHER_SHARE = 0.3  # measured 2% (PyTorch), 13-16% (ONNX: layout reorders) here; names without module paths: 100%


@pytest.fixture(scope="module")
def artifacts(model, store):
    static = ExportOptions(static=True, resolution=SIZE, downsample_ratio=RATIO, validation_frames=2)
    return {"dynamic": store.get(model, "onnx", "fp32", ExportOptions(validation_frames=2)),
            "static": store.get(model, "onnx", "fp32", static)}


@pytest.fixture(scope="module")
def src():
    from rvm.measure.bench import sample_frame
    return sample_frame(*SIZE)


def assert_every_block_timed(profile):
    assert all(profile.block_ms[block] > 0 for block in BLOCKS), profile.block_ms
    assert profile.share(OTHER) < MAX_OTHER_SHARE, profile.block_ms
    # the blocks' times are parts of a frame: their sum cannot exceed the frame by much (profiler overhead)
    assert sum(profile.block_ms.values()) < 1.5 * profile.frame_ms, (profile.block_ms, profile.frame_ms)


def test_pytorch_blocks(model, src):
    assert_every_block_timed(pytorch_profile(model, src, RATIO, FRAMES))


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_onnx_blocks(artifacts, src, kind):
    profile = onnx_profile(artifacts[kind], src, RATIO, FRAMES)
    assert_every_block_timed(profile)
    assert ("static" in profile.name) == (kind == "static")
    assert "fused step" in profile.name  # the refiner's time includes the fused step, run outside the session


@pytest.mark.parametrize("name, block", [
    ("/backbone/features.0/features.0.0/Conv_kernel_time", "backbone"),
    ("/decoder/decode4/gru/ih/ih.0/Conv_quant_kernel_time", "decoder.decode4"),
    ("/decoder/decode0/conv/conv.0/Conv_kernel_time", "decoder.decode0"),
    ("/refiner/Resize_kernel_time", "refiner"),
    ("/decoder/AveragePool_kernel_time", OTHER),  # the decoder's pooled image copies belong to no block
    ("/Resize_kernel_time", OTHER),
    ("/backbone_extra/Conv_kernel_time", OTHER),  # a prefix of a block's name is not the block
])
def test_block_of_node(name, block):
    assert block_of_node(name) == block


def test_block_work_scales_as_the_network_does(model):
    """FLOPs of the low-resolution blocks follow the downsampled size, the refiner's bytes the full frame."""
    small, large = block_work(model, (320, 192), 0.5), block_work(model, (640, 384), 0.25)
    for block in BLOCKS:
        if block != "refiner":  # same downsampled size (160x96) in both: the same work
            assert large[block].gflops == pytest.approx(small[block].gflops, rel=0.02), block
            assert large[block].mbytes == pytest.approx(small[block].mbytes, rel=0.05), block
    assert large["refiner"].mbytes > 1.5 * small["refiner"].mbytes  # its last steps run on the full frame
    assert all(small[block].gflops > 0 and small[block].mbytes > 0 for block in BLOCKS)
    assert small["backbone"].gflops > 5 * small["refiner"].gflops  # the refiner moves bytes, it barely computes
    assert small["refiner"].mbytes / small["refiner"].gflops > 4 * small["backbone"].mbytes / small["backbone"].gflops


def test_machine_peak_and_roofline():
    peak = machine_peak(repeats=2)
    assert 1 < peak.gflops < 1e5 and 0.5 < peak.gbytes < 1e4
    slow_memory = Peak(gflops=100.0, gbytes=1.0)  # the roofline is the binding one of compute and bandwidth
    work = Work(gflops=1.0, mbytes=100.0)
    assert work.ceiling_ms(slow_memory) == pytest.approx(100.0)  # 100 MB at 1 GB/s
    assert work.ceiling_ms(Peak(gflops=10.0, gbytes=1000.0)) == pytest.approx(100.0)  # 1 GFLOP at 10 GFLOP/s


def test_cli_profiles_an_artifact(artifacts, capsys):
    argv = ["profile", str(artifacts["dynamic"]), "--checkpoint", str(need(DGF_WEIGHTS)),
            "--resolution", "x".join(map(str, SIZE)), "--downsample-ratio", str(RATIO), "--frames", "1", "--json",
            "--full-resolution-step", "both"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["profiles"]
    assert [row["name"].split(" ")[0] for row in rows] == ["pytorch", *[artifacts["dynamic"].name] * 2]
    assert ["fused step" in row["name"] for row in rows] == [False, True, False]  # before and after, one run
    assert all(set(row["block_ms"]) == {*BLOCKS, OTHER} and row["frame_ms"] > 0 for row in rows)
    assert report["peak"]["gflops"] > 0 and report["peak"]["gbytes"] > 0
    assert set(report["work"]) == set(report["ceiling_ms"]) == {*BLOCKS, OTHER}
    for row in rows:  # above 1 where a small frame's block works from cache, faster than memory copies run
        assert set(row["share_of_peak"]) == {*BLOCKS, OTHER}
        assert all(0 < row["share_of_peak"][block] < 100 for block in BLOCKS), row["share_of_peak"]


@pytest.mark.parametrize("artifact, problem", [("model.tflite", "reads ONNX files"), ("missing.onnx", "no such file")])
def test_cli_refuses_what_it_cannot_profile(tmp_path, capsys, artifact, problem):
    path = tmp_path / artifact
    if path.suffix == ".tflite":
        path.write_bytes(b"not onnx")
    assert main(["profile", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1

"""int8 ONNX (QDQ static quantization, ONNX Runtime): calibrated on clips other than the parity clip with the
recurrent state flowing, the float layers kept where measurement says, within the registry's int8 bounds, and
those bounds reject a runtime fed the wrong colour order."""
import numpy as np
import onnx
import pytest

from rvm.compare import compare
from rvm.exporters.int8 import ONNX_KEEP_FP32, calibration_samples
from rvm.formats import ExportOptions
from rvm.media.samples import validation_frames
from rvm.runtimes import load
from rvm.runtimes.pytorch import PyTorchRuntime

from .artifact_helpers import FRAMES, ColourOrderSwapped, calibration, failures

RATIO = 0.5


def test_calibration_states_flow(model):
    """Each sample after the first carries the state the fp32 model produced, not zeros."""
    samples = calibration_samples(model, ExportOptions(calibration=calibration()), True, frames_per_source=3)
    assert len(samples) == 6
    assert samples[0]["r1i"].shape == (1, 1, 1, 1) and not samples[0]["r1i"].any()
    assert samples[1]["r1i"].shape[1] == 16 and np.abs(samples[2]["r4i"]).max() > 1e-3
    assert samples[0]["src"].shape == (1, 3, 184, 324) and samples[0]["downsample_ratio"][0] == RATIO


def test_onnx_int8_within_bounds_and_colour_swap_caught(model, store):
    options = ExportOptions(calibration=calibration(), validation_frames=3)
    path = store.get(model, "onnx", "int8", options)
    assert path.name == "rvm_mobilenetv3_int8.onnx"
    graph = onnx.load(str(path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [13]
    ops = list(graph.graph.node)
    assert sum(n.op_type == "QuantizeLinear" for n in ops) > 50
    # the layers kept in float keep float weights; the others' weights are int8
    dequantized = {n.output[0] for n in ops if n.op_type == "DequantizeLinear"}
    convs = [n for n in ops if n.op_type == "Conv"]
    kept = [n for n in convs if any(part in n.name for part in ONNX_KEEP_FP32)]
    assert kept and not any(n.input[1] in dequantized for n in kept)
    assert sum(n.input[1] in dequantized for n in convs) == len(convs) - len(kept)
    clip = validation_frames(FRAMES)
    with load(path, device="cpu") as runtime:
        assert runtime.info.precision == "int8"
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, clip, RATIO)
        assert failures(result, "onnx", "int8") == [], result.as_dict()
        broken = compare(PyTorchRuntime(model, device="cpu"), ColourOrderSwapped(runtime), clip, RATIO)
    assert failures(broken, "onnx", "int8"), broken.as_dict()


@pytest.mark.parametrize("graph_optimization", ["disable", "basic"])
def test_onnx_int8_within_bounds_on_other_kernel_paths(model, store, graph_optimization):
    """ONNX Runtime without its graph optimisations runs the QDQ graph as written (no fused QLinear kernels), as a
    runtime without them would: the same bounds hold (docs/parity.md, Kernel paths)."""
    path = store.get(model, "onnx", "int8", ExportOptions(calibration=calibration(), validate=False))
    with load(path, device="cpu", graph_optimization=graph_optimization) as runtime:
        result = compare(PyTorchRuntime(model, device="cpu"), runtime, validation_frames(FRAMES), RATIO)
    assert failures(result, "onnx", "int8") == [], result.as_dict()

"""MNN export: our ONNX graph (dynamic, or the static profile with `--static`) through MNN's converter, the
contract's names kept (`src, r1i..r4i[, downsample_ratio]` -> `fgr, pha, r1o..r4o`), the metadata JSON stored in
the model's bizCode string (read back with `Module.get_info()`).

fp16 stores the convolution weights in half precision (`--fp16`); MNN widens them at load and computes in float32
on x86 CPUs (fp16 arithmetic where an ARM CPU has it). int8 is MNN's offline quantization (`mnnquant`, EMA feature
ranges, every convolution int8 in weights and activations) calibrated on frames with the recurrent state flowing
(`rvm.exporters.int8`), each sample written as MNN's "sequence" calibration input (one folder per frame, one text
file per input). Unlike the ONNX and OpenVINO int8 paths, no layer stays float: MNN 3.6.1's EMA quantizer ignores
its `skip_quant_op_names` (the same artifact, bit for bit, with or without `KEEP_FP32`'s layers listed), and its KL
quantizer, which honours the list, crashes on this multi-input graph (dynamic and static alike). The registered
bounds are measured on this all-int8 graph.

MNN's tools are called through their compiled module (`_tools`), not `MNN.tools`: importing that package runs
`pip install` when the aliyun logging SDK is missing and sends each conversion to a remote log service. Both tools
print to the process's stdout, which `--json` output owns, so they print to stderr here (as MNN's runtime does).
"""
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from rvm.contracts import ONNX_INPUTS
from rvm.errors import ExportError
from rvm.metadata import ArtifactMetadata
from rvm.runtimes.mnn import c_stdout_on_stderr

from .onnx import fp32_graph

log = logging.getLogger(__name__)


def export_mnn(model, path, precision: str, options) -> None:
    from importlib.metadata import version

    import onnx
    graph = fp32_graph(model, options)
    metadata = ArtifactMetadata.for_export(model, "mnn", precision, {"MNN": version("MNN"), "onnx": onnx.__version__},
                                           options)
    biz_code = ["--bizCode", json.dumps(metadata.to_strings(), sort_keys=True)]
    with tempfile.TemporaryDirectory() as work:
        source = Path(work, "model.onnx")
        onnx.save(graph, str(source))
        if precision != "int8":
            convert(["-f", "ONNX", "--modelFile", str(source), "--MNNModel", str(path), *biz_code]
                    + (["--fp16"] if precision == "fp16" else []))
        else:
            fp32, int8 = Path(work, "fp32.mnn"), Path(work, "int8.mnn")
            convert(["-f", "ONNX", "--modelFile", str(source), "--MNNModel", str(fp32)])
            quantize(model, fp32, int8, Path(work, "calibration"), options)
            # the quantizer drops the bizCode (and lists only fgr and pha as outputs, which the runtime names
            # itself): the metadata goes in with one more pass of the converter
            convert(["-f", "MNN", "--modelFile", str(int8), "--MNNModel", str(path), *biz_code])
    log.info("wrote MNN %s to %s", precision, path)


def convert(arguments) -> None:
    with c_stdout_on_stderr():
        import _tools
        ok = _tools.mnnconvert(["mnnconvert", *arguments])
    if not ok:
        raise ExportError(f"MNN's converter failed (mnnconvert {' '.join(arguments[:4])} ...): see its log above")


def quantize(model, source: Path, target: Path, folder: Path, options) -> None:
    """MNN offline int8 of `source` (EMA ranges), calibrated on frames with the state flowing."""
    from .int8 import calibration_samples
    samples = [full_size_states(sample, model.variant) for sample in
               calibration_samples(model, options, with_ratio=not options.static)]
    for index, sample in enumerate(samples):
        sample_folder = folder / f"{index:04d}"
        sample_folder.mkdir(parents=True)
        for name, array in sample.items():
            np.savetxt(sample_folder / f"{name}.txt", array.reshape(-1), fmt="%.8g")
        (sample_folder / "input.json").write_text(json.dumps({"inputs": shapes_of(sample)}))
    config = {"path": str(folder), "input_type": "sequence", "inputs": shapes_of(samples[0]),
              "feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS", "batch_size": 1}
    config_file = folder.parent / "calibration.json"  # beside the samples: every entry of the folder is one
    config_file.write_text(json.dumps(config))
    with c_stdout_on_stderr():
        import _tools
        ok = _tools.mnnquant(["mnnquant", str(source), str(target), str(config_file)])
    if not ok or not target.is_file():
        raise ExportError("MNN's quantizer failed: see its log above")


def full_size_states(sample, variant):
    """The sample with each `[1,1,1,1]` zero state (a dynamic graph's first frame) at its full shape: MNN's
    quantizer fails on samples whose shapes differ."""
    from rvm.iospec import state_shapes
    if sample["r1i"].shape != (1, 1, 1, 1):
        return sample
    _, _, height, width = sample["src"].shape
    shapes = state_shapes(variant, (width, height), float(sample["downsample_ratio"][0]))
    return {**sample, **{f"r{i}i": np.zeros(shape, np.float32) for i, shape in enumerate(shapes, 1)}}


def shapes_of(sample):
    return [{"name": name, "shape": list(sample[name].shape)} for name in ONNX_INPUTS if name in sample]


__all__ = ["export_mnn"]

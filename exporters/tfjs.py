"""TF.js graph model: SavedModel first, then tensorflowjs, with the weights stored per precision (see
QUANTIZATION): `mixed` (the default) uint8 where it is harmless and float16 elsewhere, `int8` all
uint8 as the official download, `fp16` all float16. TF.js computes in float32 whatever the storage.

The converter runs in a subprocess with TF_ENABLE_ONEDNN_OPTS=0: with oneDNN on, TF fuses conv+hardswish
into `_FusedHardswish`, an op TF.js lacks, which only a real TF.js run would reveal.

tensorflowjs names a signature entry after its tensor ("Identity_2:0", "r1i:0") whenever several entries
share a dtype and shape (the scalar-zero-capable states all have unknown shape), and TF.js then cannot
find `r1o` in `executeAsync(..., ['fgr','pha','r1o',...])`. The conversion step renames those entries
back to the contract names, taken from the SavedModel's own signature.

tensorflowjs also fuses a depthwise convolution followed by an addition of any tensor into
`FusedDepthwiseConv2dNative` with that tensor as its "bias"; TF.js accepts rank-1 biases only ("only supports
rank-1 bias but got rank 4": the fast guided filter's box filter of `x*x` minus `mean*mean`). Such fusions
are split back into the convolution and an `AddV2`.

Run as `python -m rvm.exporters.tfjs SAVED_MODEL OUTPUT_DIR PRECISION` it is that conversion step.
"""
import base64
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rvm.contracts import TF_INPUTS, TF_OUTPUTS
from rvm.errors import ExportError
from rvm.formats import TFJS_MODEL_FILE
from rvm.metadata import METADATA_FILE, ArtifactMetadata

log = logging.getLogger(__name__)
SIGNATURE = "serving_default"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# tensorflowjs `quantization_dtype_map` per precision: weight-name patterns per storage dtype (the TF network
# names each convolution's weights after its module path, see rvm.exporters.tf_network); `True` marks the dtype of
# every weight no pattern names. `mixed` was chosen by measurement (docs/formats.md, TF.js precisions): uint8 on the
# early backbone, the decoder, the refiner or even the squeeze-excitation gates alone costs alpha MAD 0.3-9 (x1e-3)
# or dtSSD 2-4x fp16's on person_a; the encoder's last 1x1 convolution and the LR-ASPP (400k weights) are harmless.
UINT8_IN_MIXED = ("*/backbone/layers/16/*", "*/aspp/*")
QUANTIZATION = {
    "mixed": {"uint8": list(UINT8_IN_MIXED), "float16": True},
    "int8": {"uint8": True},
    "fp16": {"float16": True},
}


def export_tfjs(model, path: Path, precision: str, options) -> None:
    from .tf import export_tf

    if precision not in QUANTIZATION:
        raise ExportError(f"TF.js is exported in {', '.join(QUANTIZATION)}, not {precision}")
    path = Path(path)
    if path.exists():
        raise ExportError(f"{path} exists: the TF.js exporter writes a new folder only")
    with tempfile.TemporaryDirectory(prefix="rvm-tfjs-") as scratch:
        saved_model = Path(scratch) / "saved_model"
        export_tf(model, saved_model, "fp32", options)
        log.info("converting the SavedModel to a TF.js graph model (%s weights)", precision)
        convert_in_subprocess(saved_model, path, precision)
    metadata = ArtifactMetadata.for_export(model, "tfjs", precision, {
        "tensorflow": importlib.metadata.version("tensorflow"),
        "tensorflowjs": importlib.metadata.version("tensorflowjs")}, options)
    (path / METADATA_FILE).write_text(metadata.to_json())


def convert_in_subprocess(saved_model: Path, output_dir: Path, precision: str) -> None:

    # TFDF_DISABLE_WELCOME_MESSAGE: tensorflow_decision_forests (a tensorflowjs import) else shows a banner
    # through IPython when stdout is not a terminal, and fails where IPython is not installed
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
           "TFDF_DISABLE_WELCOME_MESSAGE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    # absolute paths: the converter is another process, whose folder is not part of the contract
    done = subprocess.run([sys.executable, "-m", "rvm.exporters.tfjs", str(Path(saved_model).resolve()),
                           str(Path(output_dir).resolve()), precision],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ExportError(f"tensorflowjs conversion failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def convert(saved_model: Path, output_dir: Path, precision: str) -> None:
    """tensorflowjs conversion (weights stored as `precision` says) and the signature-name repair; needs
    TF_ENABLE_ONEDNN_OPTS=0 set before TensorFlow is imported, hence run in a subprocess."""
    import tensorflow as tf
    from tensorflowjs.converters import tf_saved_model_conversion_v2

    tf_saved_model_conversion_v2.convert_tf_saved_model(
        str(saved_model), str(output_dir), signature_def=SIGNATURE, saved_model_tags="serve",
        quantization_dtype_map=QUANTIZATION[precision])
    function = tf.saved_model.load(str(saved_model)).signatures[SIGNATURE]
    # a concrete function flattens its dict outputs in sorted key order
    output_names = dict(zip((t.name for t in function.outputs), sorted(function.structured_outputs)))
    input_names = {spec.name: key for key, spec in function.structured_input_signature[1].items()}
    model_json = output_dir / TFJS_MODEL_FILE
    model = json.loads(model_json.read_text())
    repair_signature(model, input_names, output_names)
    unfuse_tensor_biases(model)
    temporary = model_json.with_name(model_json.name + ".tmp")
    temporary.write_text(json.dumps(model))
    os.replace(temporary, model_json)


FUSED_CONVOLUTIONS = {"FusedDepthwiseConv2dNative": "DepthwiseConv2dNative", "_FusedConv2D": "Conv2D"}
FUSION_ATTRS = ("fused_ops", "num_args", "epsilon", "leakyrelu_alpha")


def unfuse_tensor_biases(model: dict) -> None:
    """Split convolutions fused with a non-constant "bias" into the convolution and an AddV2 (see above)."""
    nodes = model["modelTopology"]["node"]
    constants = {node["name"] for node in nodes if node["op"] == "Const"}
    added = []
    for node in nodes:
        if node["op"] not in FUSED_CONVOLUTIONS or all(name in constants for name in node["input"][2:]):
            continue
        fused_ops = [base64.b64decode(op).decode() for op in node["attr"]["fused_ops"]["list"]["s"]]
        if fused_ops != ["BiasAdd"]:
            raise ExportError(f"{node['name']} fuses {fused_ops} with a non-constant bias, which TF.js cannot run")
        name, (src, kernel, bias) = node["name"], node["input"]
        node.update(name=f"{name}/convolution", op=FUSED_CONVOLUTIONS[node["op"]], input=[src, kernel],
                    attr={key: value for key, value in node["attr"].items() if key not in FUSION_ATTRS})
        # the addition takes over the fused node's name, so its consumers need no change
        added.append({"name": name, "op": "AddV2", "input": [node["name"], bias], "attr": {"T": {"type": "DT_FLOAT"}}})
    nodes.extend(added)
    if added:
        log.info("split %d convolution(s) fused with a tensor bias", len(added))


def repair_signature(model: dict, input_names: dict, output_names: dict) -> None:
    """Key every signature entry by its contract name. `input_names` maps placeholder names to input keys,
    `output_names` output tensor names to output keys."""
    signature = model["signature"]
    signature["inputs"] = {input_names.get(entry["name"].split(":")[0], key): entry
                           for key, entry in signature["inputs"].items()}
    signature["outputs"] = {output_names.get(entry["name"], key): entry for key, entry in signature["outputs"].items()}
    missing = [name for name in TF_INPUTS if name not in signature["inputs"]] + \
              [name for name in TF_OUTPUTS if name not in signature["outputs"]]
    if missing:
        raise ExportError(f"the converted TF.js model lacks signature entries {', '.join(missing)}: the SavedModel "
                         f"must take {', '.join(TF_INPUTS)} and return {', '.join(TF_OUTPUTS)}")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])

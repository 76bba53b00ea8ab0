"""CoreML: `.mlmodel` (neural network) and `.mlpackage` (ML program), fixed resolution with the ratio baked in.

Prediction needs macOS (Core ML itself). `describe(path)` reads the spec and works everywhere: it is
what the exporter checks right after writing, and what Linux users can inspect.
"""
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from rvm.errors import ArtifactError, BackendUnavailable, UsageError
from rvm.metadata import ArtifactMetadata

from .base import Runtime, RuntimeInfo

NOT_MACOS = ("CoreML prediction needs macOS; this is {platform}: the spec can still be inspected with "
             "rvm.runtimes.coreml.describe(path)")


def _coremltools():
    try:
        import coremltools
    except ImportError:
        raise BackendUnavailable("coremltools is not installed: pip install 'rvm-toolkit[coreml]'") from None
    return coremltools


def describe(path) -> dict:
    """The facts of a CoreML artifact's spec: kind, inputs, outputs, weight precision, metadata."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no CoreML artifact at {path}")
    spec = _coremltools().utils.load_spec(str(path))
    kind = spec.WhichOneof("Type")
    if kind == "neuralNetwork":
        weights = _neural_network_weights(spec.neuralNetwork.layers)
    elif kind == "mlProgram":
        weights = _ml_program_weights(spec.mlProgram)
    else:
        raise ArtifactError(f"{path} is a CoreML {kind} model, not an RVM neural network or ML program")
    total = sum(weights.values())
    return {
        "kind": kind,
        "specification_version": spec.specificationVersion,
        "inputs": [_feature(f) for f in spec.description.input],
        "outputs": [_feature(f) for f in spec.description.output],
        "weight_precision": max(weights, key=weights.get) if weights else None,
        "weight_fractions": {k: v / total for k, v in weights.items()},
        "author": spec.description.metadata.author,
        "short_description": spec.description.metadata.shortDescription,
        "metadata": dict(spec.description.metadata.userDefined),
    }


def _feature(description) -> dict:
    kind = description.type.WhichOneof("Type")
    fact = {"name": description.name, "type": kind, "optional": description.type.isOptional}
    if kind == "imageType":
        image = description.type.imageType
        fact.update(width=image.width, height=image.height,
                    color=image.ColorSpace.Name(image.colorSpace))
    elif kind == "multiArrayType":
        array = description.type.multiArrayType
        fact.update(shape=list(array.shape), dtype=array.ArrayDataType.Name(array.dataType))
        if array.WhichOneof("defaultOptionalValue"):
            fact["default"] = getattr(array, array.WhichOneof("defaultOptionalValue"))
    return fact


def _neural_network_weights(layers) -> Dict[str, int]:
    """Parameter count per storage kind ('fp32', 'fp16', 'int8'...) over every WeightParams of every layer."""
    counts: Dict[str, int] = {}

    def visit(message):
        for field, value in message.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            for item in (value if field.label == field.LABEL_REPEATED else [value]):
                if type(item).__name__ == "WeightParams":
                    if item.floatValue:
                        kind, size = "fp32", len(item.floatValue)
                    elif item.float16Value:
                        kind, size = "fp16", len(item.float16Value) // 2
                    elif item.rawValue and item.quantization.numberOfBits:
                        kind, size = f"int{item.quantization.numberOfBits}", len(item.rawValue)
                    else:
                        continue
                    counts[kind] = counts.get(kind, 0) + size
                else:
                    visit(item)

    for layer in layers:
        visit(layer)
    return counts


ML_PROGRAM_FLOATS = {"FLOAT16": "fp16", "FLOAT32": "fp32", "BFLOAT16": "bf16", "INT8": "int8", "UINT8": "int8"}


def _ml_program_weights(program) -> Dict[str, int]:
    """Element count per dtype of the main function's constant tensors (the weights)."""
    from coremltools.proto import MIL_pb2
    function = program.functions["main"]
    block = function.block_specializations[function.opset]
    counts: Dict[str, int] = {}
    for op in block.operations:
        if op.type != "const":
            continue
        tensor = op.attributes["val"].type.tensorType
        kind = ML_PROGRAM_FLOATS.get(MIL_pb2.DataType.Name(tensor.dataType))
        if kind:
            size = int(np.prod([d.constant.size for d in tensor.dimensions])) if tensor.dimensions else 1
            counts[kind] = counts.get(kind, 0) + size
    return counts


class CoreMLRuntime(Runtime):
    backend = "coreml"

    def __init__(self, model, facts: dict, path: str, device: str = "auto", **options):
        self.model = model
        meta = facts["metadata"]
        src = next(f for f in facts["inputs"] if f["name"] == "src")
        info = RuntimeInfo(self.backend, device, meta.get("precision", facts["weight_precision"]), path=path,
                           fixed_resolution=(src["width"], src["height"]),
                           baked_downsample_ratio=float(meta["downsample_ratio"]),
                           metadata=ArtifactMetadata.from_strings(meta))
        super().__init__(info, **options)

    @classmethod
    def from_path(cls, path, device: str = "auto", threads: Optional[int] = None, **options):
        """`threads` is accepted and ignored: Core ML schedules its own compute units."""
        # the spec is read first, on every OS: a corrupt artifact is reported as such on Linux too
        facts = describe(path)
        if "downsample_ratio" not in facts["metadata"]:
            raise ArtifactError(f"{path} has no downsample_ratio in its metadata: export it with rvm-export")
        if sys.platform != "darwin":
            raise BackendUnavailable(NOT_MACOS.format(platform=sys.platform.capitalize()))
        ct = _coremltools()
        units = {"auto": ct.ComputeUnit.ALL, "cpu": ct.ComputeUnit.CPU_ONLY}
        if device not in units:
            raise UsageError(f"CoreML device must be auto or cpu, got {device!r}")
        model = ct.models.MLModel(str(path), compute_units=units[device])
        return cls(model, facts, str(path), device=device, **options)

    def _run(self, src, state, downsample_ratio):
        from PIL import Image
        fgrs, phas, states = [], [], []
        for index, frame in enumerate(src):  # the model takes one image at a time
            inputs = {"src": Image.fromarray((frame.transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8))}
            if state is not None:  # omitted on the first frame: the model starts from its zero defaults
                inputs.update({f"r{i}i": s[index:index + 1] for i, s in enumerate(state, 1)})
            out = self.model.predict(inputs)
            fgrs.append(np.asarray(out["fgr"].convert("RGB"), np.float32).transpose(2, 0, 1) / 255)
            phas.append(np.asarray(out["pha"].convert("L"), np.float32)[None] / 255)
            states.append([np.asarray(out[f"r{i}o"], np.float32) for i in range(1, 5)])
        new_state = [np.concatenate(parts) for parts in zip(*states)]
        return np.stack(fgrs), np.stack(phas), new_state

    def _state_to_numpy(self, state) -> List[np.ndarray]:
        return list(state)

    def _state_from_numpy(self, arrays: Sequence[np.ndarray]):
        return [np.ascontiguousarray(a, np.float32) for a in arrays]

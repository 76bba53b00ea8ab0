"""CoreML export, as the official downloads: fixed resolution, downsample ratio baked in.

coremltools cannot convert scale-factor interpolation with flexible H/W, so the network is traced at one
resolution and ratio. `src` is an RGB image (scaled 1/255 into the network); `r1i..r4i` are optional
arrays defaulting to zeros, so clients omit them on the first frame; `fgr`/`pha` come back as images
(RGB / grayscale, 0..255) and `r1o..r4o` as arrays. Both kinds take the optional inputs the same way:
`ct.TensorType(default_value=zeros)` marks them optional with a zero default in the neural network
spec and in the ML program.

Prediction needs macOS, so right after writing, the spec is read back and checked (names, order,
types, shapes, optional defaults, weight precision, metadata): the validation possible everywhere.
"""
import contextlib
import io
import logging
from typing import List, Tuple

import numpy as np
import torch
from torch import nn

from rvm.errors import ValidationError
from rvm.iospec import state_shapes
from rvm.metadata import ArtifactMetadata

log = logging.getLogger(__name__)

STATE_INPUTS = ("r1i", "r2i", "r3i", "r4i")
STATE_OUTPUTS = ("r1o", "r2o", "r3o", "r4o")
SPEC_KINDS = {"mlmodel": "neuralNetwork", "mlpackage": "mlProgram"}
# share of the weights that must be stored at the requested precision (the rest: a few fp32 scalars)
MIN_WEIGHT_FRACTION = 0.99


class FixedSizeMatting(nn.Module):
    """MattingNetwork at one downsample ratio with image-scaled outputs: what gets traced and converted."""

    def __init__(self, model: nn.Module, downsample_ratio: float):
        super().__init__()
        self.model, self.downsample_ratio = model, downsample_ratio

    def forward(self, src, r1, r2, r3, r4):
        fgr, pha, *states = self.model(src, r1, r2, r3, r4, downsample_ratio=self.downsample_ratio)
        # CoreML image outputs read 0..255
        return (fgr * 255, pha * 255, *states)


def trace_fixed_size(model: nn.Module, resolution: Tuple[int, int], downsample_ratio: float):
    """(traced FixedSizeMatting, state shapes): the graph handed to coremltools."""
    model = model.eval().float()
    shapes = state_shapes(model.variant, resolution, downsample_ratio)
    width, height = resolution
    example = (torch.rand(1, 3, height, width), *[torch.zeros(s) for s in shapes])
    with torch.no_grad():
        traced = torch.jit.trace(FixedSizeMatting(model, downsample_ratio).eval(), example, check_trace=False)
    return traced, shapes


def export_coreml(model, path, precision: str, options) -> None:
    import coremltools as ct

    width, height = resolution = tuple(options.resolution)
    ratio, kind = float(options.downsample_ratio), options.kind or "mlmodel"
    traced, shapes = trace_fixed_size(model, resolution, ratio)
    inputs = [ct.ImageType(name="src", shape=(1, 3, height, width), scale=1 / 255, color_layout=ct.colorlayout.RGB)]
    inputs += [ct.TensorType(name=name, shape=shape, default_value=np.zeros(shape, np.float32))
               for name, shape in zip(STATE_INPUTS, shapes)]
    states = [ct.TensorType(name=name) for name in STATE_OUTPUTS]
    if kind == "mlmodel":
        # coremltools 9.0 mis-assigns image outputs of a multi-output neural network (it checks the last
        # output's shape for each), so they are converted as arrays and typed as images in the spec below
        arrays = [ct.TensorType(name="fgr"), ct.TensorType(name="pha"), *states]
        mlmodel = ct.convert(traced, inputs=inputs, outputs=arrays,
                             convert_to="neuralnetwork", minimum_deployment_target=ct.target.iOS14)
        spec = mlmodel.get_spec()
        _type_neural_network_outputs(spec, resolution, shapes)
        mlmodel = ct.models.MLModel(spec, skip_model_load=True)
        mlmodel = _quantize_weights(mlmodel, nbits=16 if precision == "fp16" else 8)
    else:
        images = [ct.ImageType(name="fgr", color_layout=ct.colorlayout.RGB),
                  ct.ImageType(name="pha", color_layout=ct.colorlayout.GRAYSCALE)]
        mlmodel = ct.convert(traced, inputs=inputs, outputs=images + states, convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS15)
    metadata = ArtifactMetadata.for_export(model, "coreml", precision, {"coremltools": ct.__version__}, options,
                                           coreml_kind=kind)
    mlmodel.user_defined_metadata.update(metadata.to_strings())
    mlmodel.author = "rvm-toolkit (Robust Video Matting, Lin et al.)"
    mlmodel.short_description = (f"Robust Video Matting {model.variant} ({model.refiner_name}), {width}x{height} "
                                 f"input, downsample ratio {ratio:g}, {precision} weights. Omit r1i..r4i on the "
                                 f"first frame; feed r1o..r4o back as r1i..r4i.")
    mlmodel.save(str(path))
    check_spec(path, kind, precision, resolution, ratio, shapes)


def _type_neural_network_outputs(spec, resolution: Tuple[int, int], shapes: List[tuple]) -> None:
    """fgr/pha become RGB/grayscale images; the states get their shapes (the converter leaves them blank)."""
    from coremltools.proto import FeatureTypes_pb2
    width, height = resolution
    outputs = {o.name: o for o in spec.description.output}
    for name, color in (("fgr", FeatureTypes_pb2.ImageFeatureType.RGB),
                        ("pha", FeatureTypes_pb2.ImageFeatureType.GRAYSCALE)):
        image = outputs[name].type.imageType
        image.width, image.height, image.colorSpace = width, height, color
    for name, shape in zip(STATE_OUTPUTS, shapes):
        outputs[name].type.multiArrayType.shape[:] = shape


def _quantize_weights(mlmodel, nbits: int):
    from coremltools.models.neural_network import quantization_utils
    with contextlib.redirect_stdout(io.StringIO()):  # it prints one line per layer
        quantized = quantization_utils.quantize_weights(mlmodel, nbits=nbits)
    log.info("neural network weights stored in %d bits", nbits)
    return quantized


def spec_problems(facts: dict, kind: str, precision: str, resolution: Tuple[int, int], downsample_ratio: float,
                  shapes: List[tuple]) -> List[str]:
    """How a described artifact (runtimes.coreml.describe) departs from the contract; empty when it holds."""
    width, height = resolution
    problems = []
    if facts["kind"] != SPEC_KINDS[kind]:
        problems.append(f"a .{kind} must hold a {SPEC_KINDS[kind]}, this holds a {facts['kind']}")
    expected_inputs = [{"name": "src", "type": "imageType", "optional": False, "width": width, "height": height,
                        "color": "RGB"}]
    expected_inputs += [{"name": name, "type": "multiArrayType", "optional": True, "shape": list(shape),
                         "dtype": "FLOAT32", "default": 0.0} for name, shape in zip(STATE_INPUTS, shapes)]
    expected_outputs = [{"name": "fgr", "type": "imageType", "optional": False, "width": width, "height": height,
                         "color": "RGB"},
                        {"name": "pha", "type": "imageType", "optional": False, "width": width, "height": height,
                         "color": "GRAYSCALE"}]
    expected_outputs += [{"name": name, "type": "multiArrayType", "optional": False, "shape": list(shape),
                          "dtype": "FLOAT32"} for name, shape in zip(STATE_OUTPUTS, shapes)]
    for side, expected, actual in (("input", expected_inputs, facts["inputs"]),
                                   ("output", expected_outputs, facts["outputs"])):
        if [f["name"] for f in actual] != [f["name"] for f in expected]:
            problems.append(f"{side}s are {[f['name'] for f in actual]}, expected {[f['name'] for f in expected]}")
            continue
        problems += [f"{side} {want['name']} is {got}, expected {want}"
                     for want, got in zip(expected, actual) if got != want]
    share = facts["weight_fractions"].get(precision, 0.0)
    if share < MIN_WEIGHT_FRACTION:
        problems.append(f"only {share:.1%} of the weights are stored in {precision}: {facts['weight_fractions']}")
    meta = facts["metadata"]
    for key, value in (("precision", precision), ("resolution", f"{width}x{height}"),
                       ("downsample_ratio", str(downsample_ratio))):
        if meta.get(key) != value:
            problems.append(f"metadata {key} is {meta.get(key)!r}, expected {value!r}")
    return problems


def check_spec(path, kind: str, precision: str, resolution: Tuple[int, int], downsample_ratio: float,
               shapes: List[tuple]) -> None:
    """Raise ValidationError when the written artifact's spec departs from the contract."""
    from rvm.runtimes.coreml import describe

    problems = spec_problems(describe(path), kind, precision, resolution, downsample_ratio, shapes)
    if problems:
        raise ValidationError(f"CoreML spec check failed, artifact removed: {'; '.join(problems)}")
    log.info("CoreML spec checked: %s, %dx%d, %s weights", SPEC_KINDS[kind], *resolution, precision)

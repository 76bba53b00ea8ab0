"""ExecuTorch export: the reference model at one resolution with the ratio baked in (`StaticMatting`, states at
their true shapes), captured with torch.export and lowered with the XNNPACK partitioner into one `.pte` program.

XNNPACK takes every compute op of the graph once a few ATen ops it lacks are rewritten before lowering
(`XNNPACK_REWRITES`, each exact or within float rounding, and only where the shapes make it so): splits become
slices, the decoder's ceil-mode average pool becomes a floor-mode one over the frame with its last row or column
repeated (a 2-wide window over one real value and its copy is that value's mean), the refiner's channel mean a sum
of slices, a crop that keeps the whole tensor a copy, `1 - z` a negate-and-add on a float scalar, hardsigmoid a
hardtanh, and the refiner's constant matrix product a 1x1 convolution; constants are then folded so that
convolution has static weights. `delegation_report` says what was delegated; the exporter logs it and stores it
in the metadata (`details["xnnpack"]`).

int8 is PT2E post-training quantization with XNNPACK's quantizer (per-channel int8 weights, int8 activations),
calibrated on real frames with the state flowing (`rvm.exporters.int8.calibration_samples`), the layers the
project keeps in float (`rvm.exporters.int8.KEEP_FP32`) left in float. Frames and states stay float32 at the
program's inputs and outputs.

The metadata (JSON) is a constant method of the program, `rvm_metadata`, returning its UTF-8 bytes as a uint8
tensor: one file, read back by any ExecuTorch runtime.
"""
import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Dict

import torch

from rvm.iospec import state_shapes
from rvm.metadata import ArtifactMetadata

from .ncnn import with_full_size_states
from .onnx import StaticMatting

log = logging.getLogger(__name__)
aten = torch.ops.aten
METADATA_METHOD = "rvm_metadata"  # the program's constant method holding the metadata JSON (uint8 tensor)


# ---- ATen rewrites to ops XNNPACK delegates (traced with static shapes; NotImplemented keeps the op) -------
def _split_as_slices(x, split_size, dim=0):
    length = x.shape[dim]
    sizes = list(split_size) if not isinstance(split_size, int) else [split_size] * (length // split_size) + (
        [length % split_size] if length % split_size else [])
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [aten.slice.Tensor(x, dim, start, start + size) for start, size in zip(starts, sizes)]


def _avg_pool_half_floor(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                         divisor_override=None):
    """2x2/2 ceil-mode pooling that excludes padding (the decoder's `avg_pool_half`) as floor-mode pooling of the
    input with its last row/column repeated where odd: the partial window's mean over real values is unchanged."""
    if (list(kernel_size) not in ([2], [2, 2]) or list(stride or kernel_size) not in ([2], [2, 2])
            or padding not in (0, [0], [0, 0]) or not ceil_mode or count_include_pad or divisor_override):
        return NotImplemented
    for dim in (2, 3):
        if x.shape[dim] % 2:
            x = aten.cat.default([x, aten.slice.Tensor(x, dim, x.shape[dim] - 1, x.shape[dim])], dim)
    return aten.avg_pool2d.default(x, [2, 2], [2, 2])


def _channel_mean_as_sum(x, dim, keepdim=False, dtype=None):
    """A mean over the channels of a 4-D tensor (XNNPACK averages the innermost dimensions only)."""
    if x.dim() != 4 or dim is None or [d % 4 for d in dim] != [1] or not keepdim or dtype is not None:
        return NotImplemented
    total = aten.slice.Tensor(x, 1, 0, 1)
    for channel in range(1, x.shape[1]):
        total = aten.add.Tensor(total, aten.slice.Tensor(x, 1, channel, channel + 1))
    return aten.div.Tensor(total, float(x.shape[1]))


def _rsub_float(x, other, alpha=1):
    """`other - x` as `-x + other` with a float scalar (an integer one needs a dtype cast XNNPACK lacks)."""
    if alpha != 1:
        return NotImplemented
    return aten.add.Tensor(aten.neg.default(x), float(other))


def _hardsigmoid(x):
    return aten.div.Tensor(aten.hardtanh.default(aten.add.Tensor(x, 3.0), 0.0, 6.0), 6.0)


def _matrix_times_batch_as_conv(a, b):
    """[M,K] @ [B,K,N] as a 1x1 convolution with weights `a`, which XNNPACK takes once `a` is a folded constant."""
    if a.dim() != 2 or b.dim() != 3:
        return NotImplemented
    (m, k), (batch, _, n) = a.shape, b.shape
    out = aten.convolution.default(aten.view.default(b, [batch, k, n, 1]), aten.view.default(a, [m, k, 1, 1]),
                                   None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    return aten.view.default(out, [batch, m, n])


def _alias_as_copy(x):
    """An alias (a crop that keeps the whole tensor) as a copy, which XNNPACK has."""
    return aten.clone.default(x)


XNNPACK_REWRITES = {
    aten.split.Tensor: _split_as_slices, aten.split_with_sizes.default: _split_as_slices,
    aten.avg_pool2d.default: _avg_pool_half_floor, aten.mean.dim: _channel_mean_as_sum,
    aten.rsub.Scalar: _rsub_float, aten.hardsigmoid.default: _hardsigmoid,
    aten.matmul.default: _matrix_times_batch_as_conv, aten.alias.default: _alias_as_copy,
}


# ---- capture, quantize, lower ------------------------------------------------------------------------------
def static_module(model, options):
    """The static wrapper over full-size states and an example input at the options' resolution."""
    resolution, ratio = tuple(options.resolution), float(options.downsample_ratio)
    width, height = resolution
    wrapper = StaticMatting(with_full_size_states(model), ratio).eval()
    example = (torch.rand(1, 3, height, width), *[torch.zeros(s) for s in state_shapes(model.variant, resolution,
                                                                                        ratio)])
    return wrapper, example


def quantized_module_names(wrapper) -> list:
    """The wrapper's submodules that run int8: the largest ones outside the layers KEEP_FP32 keeps in float (its
    node-name fragments as module paths; Resize is no module, and XNNPACK's quantizer leaves it in float anyway)."""
    from .int8 import KEEP_FP32
    kept = [f"model.{part.strip('/').replace('/', '.')}" for part in KEEP_FP32 if part.endswith("/")]
    holds_kept = {".".join(name.split(".")[:i]) for name in kept for i in range(1, name.count(".") + 1)}
    return [name for name, _ in wrapper.named_modules() if name and name not in kept and name not in holds_kept
            and name.rpartition(".")[0] in holds_kept]


def quantized(wrapper, example, model, options):
    """The PT2E int8 module of `wrapper`, calibrated with the state flowing."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .int8 import calibration_samples
    quantizer, config = XNNPACKQuantizer(), get_symmetric_quantization_config(is_per_channel=True)
    for name in quantized_module_names(wrapper):  # the rest has no config: it stays float
        quantizer.set_module_name(name, config)
    captured = torch.export.export(wrapper, example, strict=False).module()
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for sample in calibration_samples(model, options, with_ratio=False):
            prepared(*(torch.from_numpy(sample[name]) for name in ("src", "r1i", "r2i", "r3i", "r4i")))
    return convert_pt2e(prepared)


def lower(model, precision: str, options):
    """The EdgeProgramManager of the model lowered to XNNPACK, and its delegation report."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass
    model = copy.deepcopy(model).float().cpu().eval()
    wrapper, example = static_module(model, options)
    if precision == "int8":
        wrapper = quantized(wrapper, example, model, options)
    with torch.no_grad():
        program = torch.export.export(wrapper, example, strict=False)
    program = constant_prop_pass(program.run_decompositions(XNNPACK_REWRITES))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return edge, delegation_report(edge.exported_program().graph_module)


# nodes of a lowered graph that compute nothing: tuple access and the delegate calls themselves
_STRUCTURAL = ("getitem", "executorch_call_delegate")


def _op_name(node) -> str:
    return str(getattr(node.target, "__name__", node.target)).split(".default")[0]


def delegation_report(graph_module) -> Dict:
    """What XNNPACK took: {"partitions": n, "delegated_ops": {op: count}, "undelegated_ops": {op: count}}."""
    delegated, undelegated, partitions = Counter(), Counter(), 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            partitions += 1
            lowered = getattr(graph_module, node.name).original_module.graph.nodes
            delegated.update(_op_name(n) for n in lowered if n.op == "call_function"
                             and not any(s in _op_name(n) for s in _STRUCTURAL))
        elif node.op == "call_function" and not any(s in _op_name(node) for s in _STRUCTURAL):
            undelegated[_op_name(node)] += 1
    return {"partitions": partitions, "delegated_ops": dict(sorted(delegated.items())),
            "undelegated_ops": dict(sorted(undelegated.items()))}


def describe(report: Dict) -> str:
    """One line: how much XNNPACK took, and what it left on ExecuTorch's portable kernels."""
    done = sum(report["delegated_ops"].values())
    left = report["undelegated_ops"]
    line = f"XNNPACK delegates {done} of {done + sum(left.values())} ops in {report['partitions']} partition(s)"
    return line + (": every op" if not left else "; not delegated: " + ", ".join(f"{op} x{n}"
                                                                               for op, n in left.items()))


def export_executorch(model, path, precision: str, options) -> None:
    import executorch.version
    from executorch.exir import EdgeCompileConfig, EdgeProgramManager
    edge, report = lower(model, precision, options)
    (log.info if not report["undelegated_ops"] else log.warning)("%s", describe(report))
    metadata = ArtifactMetadata.for_export(model, "executorch", precision,
                                           {"executorch": executorch.version.__version__}, options, xnnpack=report)
    blob = torch.tensor(list(metadata.to_json().encode()), dtype=torch.uint8)
    # the report is known only once lowered: the metadata method joins the lowered program, unchecked as IR again
    edge = EdgeProgramManager(edge.exported_program(), constant_methods={METADATA_METHOD: blob},
                              compile_config=EdgeCompileConfig(_check_ir_validity=False))
    buffer = edge.to_executorch().buffer
    Path(path).write_bytes(buffer)
    log.info("wrote ExecuTorch %s (%d bytes) to %s", precision, len(buffer), path)

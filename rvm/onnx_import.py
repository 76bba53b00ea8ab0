"""Weights out of an official-layout RVM ONNX file, as a state dict in the official `.pth` layout.

The official export (opset 12) folded every BatchNorm into the convolution before it and renamed those
weights to bare numbers; convolutions without a BatchNorm keep their torch names. So: named weights are
placed by name, the rest by matching the ONNX Conv nodes, in graph order, against our model's
convolutions in the order a forward pass calls them. Each folded BatchNorm becomes an identity
(weight 1, running_mean 0, running_var 1 - eps) whose bias is the folded convolution bias.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from rvm.errors import UsageError
from rvm.model import MattingNetwork

# the first convolution's weight shape tells the backbone apart
FIRST_CONV_SHAPES = {(16, 3, 3, 3): "mobilenetv3", (64, 3, 7, 7): "resnet50"}

OnnxConv = Tuple[str, np.ndarray, Optional[np.ndarray]]  # weight name, weight, bias


def onnx_state_dict(path, variant: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """State dict for `MattingNetwork(variant, 'deep_guided_filter')` (no `project_seg.*`) and the variant."""
    import onnx
    proto = onnx.load(str(path))
    convs = _onnx_convs(proto)
    if not convs:
        raise UsageError(f"{path} has no convolutions with constant weights: not an RVM ONNX export")
    found = FIRST_CONV_SHAPES.get(tuple(convs[0][1].shape))
    if found is None:
        raise UsageError(f"{path}: first convolution has shape {list(convs[0][1].shape)}, which is neither "
                         f"RVM backbone ({', '.join(FIRST_CONV_SHAPES.values())}): not an official RVM ONNX export")
    if variant is not None and variant != found:
        raise UsageError(f"{path} holds a {found} model, but variant={variant!r} was asked for: "
                         f"drop the variant or pass a {variant} file")
    model = MattingNetwork(found, "deep_guided_filter").eval()
    order, batchnorm_after = _conv_call_order(model)
    assigned = _assign(path, convs, order)
    modules = dict(model.named_modules())
    state: Dict[str, torch.Tensor] = {}
    for module_name, (weight, bias) in assigned.items():
        _place(state, module_name, modules[module_name], weight, bias,
               batchnorm_after.get(module_name), modules)
    expected = {k for k in model.state_dict() if not k.startswith("project_seg.")}
    missing = sorted(expected - set(state))
    if missing:
        raise UsageError(f"{path}: no ONNX weights found for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}: not an official RVM ONNX layout")
    return state, found


def _onnx_convs(proto) -> List[OnnxConv]:
    """Conv nodes in graph order with their constant weight and bias, each distinct weight once."""
    from onnx import numpy_helper
    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    convs, seen = [], set()
    for node in proto.graph.node:
        if node.op_type != "Conv" or node.input[1] not in constants or node.input[1] in seen:
            continue
        seen.add(node.input[1])
        bias = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append((node.input[1], constants[node.input[1]], bias))
    return convs


def _conv_call_order(model: MattingNetwork) -> Tuple[List[str], Dict[str, str]]:
    """Names of the Conv2d modules in first-call order, and the BatchNorm that consumes each one's output."""
    order: List[str] = []
    outputs: Dict[int, Tuple[str, torch.Tensor]] = {}
    batchnorm_after: Dict[str, str] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            def on_conv(mod, args, out, name=name):
                if name not in order:
                    order.append(name)
                outputs[id(out)] = (name, out)  # the tensor is kept so its id stays unique
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d):
            def on_batchnorm(mod, args, name=name):
                producer = outputs.get(id(args[0]))
                if producer is not None and producer[1] is args[0]:
                    batchnorm_after[producer[0]] = name
            hooks.append(module.register_forward_pre_hook(on_batchnorm))
    try:
        with torch.no_grad():  # ratio < 1 so the refiner runs too
            model(torch.rand(1, 3, 64, 64), downsample_ratio=0.5)
    finally:
        for hook in hooks:
            hook.remove()
    return order, batchnorm_after


def _assign(path, convs: List[OnnxConv], order: List[str]):
    """Module name -> (weight, bias): torch-named weights by name, the folded ones by call order."""
    assigned = {}
    unnamed = []
    for weight_name, weight, bias in convs:
        module_name = weight_name[:-len(".weight")] if weight_name.endswith(".weight") else None
        if module_name in order:
            assigned[module_name] = (weight, bias)
        else:
            unnamed.append((weight, bias))
    remaining = [name for name in order if name not in assigned]
    if len(remaining) != len(unnamed):
        raise UsageError(f"{path}: {len(unnamed)} unnamed ONNX convolutions for {len(remaining)} model "
                         f"convolutions: not an official RVM ONNX layout")
    return {**assigned, **dict(zip(remaining, unnamed))}


def _place(state, module_name: str, conv: nn.Conv2d, weight: np.ndarray, bias: Optional[np.ndarray],
           batchnorm_name: Optional[str], modules) -> None:
    if tuple(weight.shape) != tuple(conv.weight.shape):
        raise UsageError(f"ONNX convolution for {module_name} has shape {list(weight.shape)}, the model "
                         f"expects {list(conv.weight.shape)}: not an official RVM ONNX layout")
    state[f"{module_name}.weight"] = _tensor(weight)
    out_channels = conv.weight.shape[0]
    if bias is None:
        bias = np.zeros(out_channels, dtype=np.float32)
    if conv.bias is not None:
        state[f"{module_name}.bias"] = _tensor(bias)
    elif batchnorm_name is not None:
        eps = modules[batchnorm_name].eps
        state.update({
            f"{batchnorm_name}.weight": torch.ones(out_channels),
            f"{batchnorm_name}.bias": _tensor(bias),
            f"{batchnorm_name}.running_mean": torch.zeros(out_channels),
            f"{batchnorm_name}.running_var": torch.full((out_channels,), 1.0 - eps),
            f"{batchnorm_name}.num_batches_tracked": torch.tensor(0, dtype=torch.long),
        })
    elif np.any(bias != 0):
        raise UsageError(f"ONNX convolution for {module_name} has a bias the model has no place for: "
                         f"not an official RVM ONNX layout")


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))

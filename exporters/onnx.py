"""ONNX opset 12 export, drop-in compatible with the official `rvm_*_fp32.onnx` / `_fp16.onnx` downloads.

Inputs `src, r1i..r4i, downsample_ratio` (ratio a float32 `[1]` runtime input), outputs `fgr, pha, r1o..r4o`,
batch/height/width dynamic, `[1,1,1,1]` zero states accepted. As in the official graph, the refiner always
runs: the ratio is a tensor, so `ratio != 1` cannot be decided at export time.

The static profile (`options.static`) is what TensorRT, OpenVINO, NCNN, MNN and TNN users need: traced at one
resolution with the ratio baked, inputs `src, r1i..r4i` with their true shapes, every `Resize` given integer
sizes and no shape computation left (checked by `tensorrt_check`); an I/O spec JSON is written beside it.
int8 (QDQ, static post-training quantization, opset 13) is made in `exporters.int8`.
"""
import copy
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.errors import ExportError, UsageError
from rvm.metadata import ArtifactMetadata

log = logging.getLogger(__name__)
OPSET = 12
TRACE_SIZE, TRACE_RATIO = (96, 160), 0.5  # the small frame (height, width) the dynamic graph is traced and probed on


class ResizeByRatio(torch.autograd.Function):
    """Bilinear downsampling whose ONNX Resize takes its scales from the `downsample_ratio` input,
    so the ratio stays a runtime input instead of being baked as a constant."""

    @staticmethod
    def forward(ctx, src: Tensor, ratio: Tensor) -> Tensor:
        return F.interpolate(src, scale_factor=float(ratio), mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)

    @staticmethod
    def symbolic(g, src, ratio):
        ones = g.op("Constant", value_t=torch.tensor([1.0, 1.0], dtype=torch.float32))
        scales = g.op("Concat", ones, ratio, ratio, axis_i=0)
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        resized = g.op("Resize", src, roi, scales, coordinate_transformation_mode_s="pytorch_half_pixel",
                       mode_s="linear", nearest_mode_s="floor")
        # same dtype, batch and channels as src (height and width are dynamic in both): without this the
        # exporter loses the channel count, which the fast guided filter's box-filter kernels are built from
        resized.setType(src.type())
        return resized


class OnnxExportWrapper(nn.Module):
    """The official ONNX signature over MattingNetwork: positional states, tensor ratio, refiner always on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor, downsample_ratio: Tensor):
        src_sm = ResizeByRatio.apply(src, downsample_ratio)
        hid, r1, r2, r3, r4 = self.model.decode(src_sm, r1, r2, r3, r4)
        fgr, pha = self.model.matte(src, src_sm, hid, True)
        return fgr, pha, r1, r2, r3, r4


def dynamic_axes() -> dict:
    """Batch, height and width dynamic on every tensor; states' channels too, as in the official file.
    Each tensor gets its own height/width names: states are smaller than the frame."""
    axes = {"src": {0: "batch_size", 2: "height", 3: "width"},
            "fgr": {0: "batch_size", 2: "height", 3: "width"},
            "pha": {0: "batch_size", 2: "height", 3: "width"}}
    for name in ONNX_INPUTS[1:5] + ONNX_OUTPUTS[2:]:
        axes[name] = {0: "batch_size", 1: f"{name}_channels", 2: f"{name}_height", 3: f"{name}_width"}
    return axes


def trace_to_onnx(model: nn.Module):
    """The fp32 graph, traced on a small frame with `[1,1,1,1]` zero states (the contract's first frame)."""
    import onnx
    # a copy in eval mode: the exporter restores the wrapper's training flag afterwards, and a fresh
    # wrapper's True would otherwise switch the caller's BatchNorms to batch statistics
    wrapper = OnnxExportWrapper(copy.deepcopy(model).float().cpu()).eval()
    src = torch.rand(1, 3, *TRACE_SIZE)
    zeros = [torch.zeros(1, 1, 1, 1) for _ in range(4)]
    ratio = torch.tensor([TRACE_RATIO], dtype=torch.float32)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # ResizeByRatio.forward reads the ratio as a float only to trace shapes; its symbolic() keeps it an input
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(wrapper, (src, *zeros, ratio), buffer, opset_version=OPSET,
                          dynamo=False, input_names=list(ONNX_INPUTS), output_names=list(ONNX_OUTPUTS),
                          dynamic_axes=dynamic_axes(), do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


class StaticMatting(nn.Module):
    """MattingNetwork at one downsample ratio with positional states: the static graph's signature."""

    def __init__(self, model: nn.Module, downsample_ratio: float):
        super().__init__()
        self.model, self.downsample_ratio = model, downsample_ratio

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor):
        return tuple(self.model(src, r1, r2, r3, r4, downsample_ratio=self.downsample_ratio))


def trace_static_onnx(model: nn.Module, resolution, downsample_ratio: float):
    """The fp32 static graph at (width, height) and the ratio, simplified, every Resize on integer sizes."""
    import onnx
    import onnxsim

    from rvm.iospec import state_shapes
    model = copy.deepcopy(model).float().cpu().eval()
    width, height = resolution
    shapes = state_shapes(model.variant, resolution, downsample_ratio)
    example = (torch.rand(1, 3, height, width), *[torch.zeros(shape) for shape in shapes])
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # sizes become constants: that is the point
        torch.onnx.export(StaticMatting(model, downsample_ratio).eval(), example, buffer, opset_version=OPSET,
                          dynamo=False, input_names=list(ONNX_INPUTS[:5]), output_names=list(ONNX_OUTPUTS),
                          do_constant_folding=True)
    # fixed input shapes let onnxsim fold every Shape/Gather/Slice of the size computations into constants
    graph, ok = onnxsim.simplify(onnx.load_from_string(buffer.getvalue()))
    if not ok:
        raise ExportError("onnxsim could not prove the static graph equal to the traced one")
    return prune(without_identity_slices(resize_to_sizes(graph)))


def inferred_shapes(graph) -> dict:
    """name -> shape of every tensor whose shape inference finds one (dims 0 where unknown)."""
    from onnx import shape_inference
    inferred = shape_inference.infer_shapes(graph)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)}


def without_identity_slices(graph):
    """Drop each `Slice` that starts at 0, steps by 1 and keeps its input's whole (known) shape: the decoder crops
    every upsampled map to its skip connection's size, and where the two already agree ONNX Runtime still copies
    the map (at 1080p, ratio 0.25, 3 ms a frame for decode0's). Its readers read its input instead."""
    import numpy as np
    from onnx import numpy_helper
    shapes = inferred_shapes(graph)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    outputs = {o.name for o in graph.graph.output}
    replaced = {}
    for node in graph.graph.node:
        if node.op_type != "Slice" or node.output[0] in outputs:
            continue
        shape_in, shape_out = shapes.get(node.input[0]), shapes.get(node.output[0])
        starts = constants.get(node.input[1])
        steps = constants.get(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(1, np.int64)
        if (shape_in and shape_in == shape_out and all(shape_in) and starts is not None and not starts.any()
                and steps is not None and (steps == 1).all()):
            replaced[node.output[0]] = replaced.get(node.input[0], node.input[0])
    kept = [node for node in graph.graph.node if node.output[0] not in replaced or node.op_type != "Slice"]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in replaced:
                node.input[i] = replaced[name]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    return graph


def channel_counts(graph, names) -> dict:
    """name -> channel count (dimension 1) of the named tensors. Shape inference finds them in a static graph; in
    the dynamic one the `Resize` by the runtime ratio leaves it without channels downstream, so the graph runs once
    on a small frame with the first frame's `[1,1,1,1]` states, the tensors added as outputs."""
    import numpy as np
    import onnx
    import onnxruntime
    shapes = inferred_shapes(graph)
    found = {name: shapes[name][1] for name in names if len(shapes.get(name) or []) > 1 and shapes[name][1]}
    missing = sorted(set(names) - set(found))
    if not missing:
        return found
    probe = copy.deepcopy(graph)
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in missing)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"src": np.random.default_rng(0).random((1, 3, *TRACE_SIZE), np.float32),
             **{name: np.zeros((1, 1, 1, 1), np.float32) for name in ONNX_INPUTS[1:5]},
             "downsample_ratio": np.array([TRACE_RATIO], np.float32)}
    inputs = {i.name for i in graph.graph.input}
    values = session.run(missing, {name: value for name, value in feeds.items() if name in inputs})
    return {**found, **{name: value.shape[1] for name, value in zip(missing, values) if value.ndim > 1}}


def graph_index(graph):
    """Initializer name -> tensor, tensor name -> the node making it, tensor name -> how many node inputs read it."""
    from collections import Counter
    weights = {t.name: t for t in graph.graph.initializer}
    producers = {name: node for node in graph.graph.node for name in node.output}
    return weights, producers, Counter(name for node in graph.graph.node for name in node.input)


def convolutions_split_at_concats(graph):
    """Write each `Conv` over a channel `Concat` (read by nothing else) as a sum of `Conv`s, one over each part,
    the bias in the first: `W * [x, f, s] = W_x * x + W_f * f + W_s * s`. Every decoder block convolves the
    upsampled map joined with its skip connection and the 3-channel image (171, 107, 59, 35 channels), and each
    ConvGRU its input joined with its state. ONNX Runtime's CPU convolutions run in a channel-blocked layout
    (NCHWc) only when the channel count is a multiple of the block (8 or 16), so it ran these outside it, and
    copied the concatenation besides; the parts are multiples of the block or small enough for its first-layer
    kernel, and the additions fold into the convolutions. Outputs move by float rounding only; input and output
    names stay (a drop-in for the official file)."""
    import numpy as np
    from onnx import helper, numpy_helper
    weights, producers, readers = graph_index(graph)
    joins = {}  # a Conv's output -> the Concat the Conv reads, where that Concat can go
    for node in graph.graph.node:
        concat = producers.get(node.input[0]) if node.op_type == "Conv" else None
        if (concat is not None and concat.op_type == "Concat" and readers[concat.output[0]] == 1
                and next(a.i for a in concat.attribute if a.name == "axis") == 1 and node.input[1] in weights
                and all(a.i == 1 for a in node.attribute if a.name == "group")):
            joins[node.output[0]] = concat
    channels_of = channel_counts(graph, [name for concat in joins.values() for name in concat.input])
    nodes, split = [], set()
    for node in graph.graph.node:
        concat = joins.get(node.output[0])
        if concat is None:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        channels = [channels_of.get(name, 0) for name in concat.input]
        if 0 in channels or sum(channels) != weight.shape[1]:
            nodes.append(node)
            continue
        parts, start, stem = [], 0, node.name or node.output[0]
        for i, (name, count) in enumerate(zip(concat.input, channels)):
            part_weight = f"{stem}_part{i}_weight"
            graph.graph.initializer.append(numpy_helper.from_array(
                np.ascontiguousarray(weight[:, start:start + count]), part_weight))
            start += count
            bias = list(node.input[2:3]) if i == 0 else []
            nodes.append(helper.make_node("Conv", [name, part_weight, *bias], [f"{stem}_part{i}"],
                                          name=f"{stem}_part{i}",
                                          **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
            parts.append(f"{stem}_part{i}")
        total = parts[0]
        for i, part in enumerate(parts[1:], 1):
            out = node.output[0] if i == len(parts) - 1 else f"{stem}_sum{i}"
            nodes.append(helper.make_node("Add", [total, part], [out], name=f"{stem}_sum{i}"))
            total = out
        split.add(concat.output[0])
    kept = [node for node in nodes if not (node.op_type == "Concat" and node.output[0] in split)]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    shapes_kept = [v for v in graph.graph.value_info if v.name not in split]
    del graph.graph.value_info[:]
    graph.graph.value_info.extend(shapes_kept)
    log.debug("split %d convolutions over concatenations", len(split))
    return prune(graph)


# ONNX Runtime's blocked layout holds 16 channels a block with AVX-512 and 8 with AVX2: pieces of whole 16-channel
# blocks stay whole blocks on both, and its blocked Concat takes only those
BLOCK_CHANNELS = 16


def blocked_recurrent_blocks(graph):
    """Keep the ConvGRU blocks of a static fp32 graph in ONNX Runtime's blocked (NCHWc) layout from their
    convolutions to their output, so the next decoder block's upsampling runs blocked too. ONNX Runtime has no
    blocked `Split` or `Sub`, and reorders a state input into the blocked layout only for the convolutions reading
    it: each block's output was split, `1 - z` taken and the state multiplied in plain layout, and the join of the
    block's output upsampled by the plain `Resize` and reordered back (at 1080p, ratio 0.25, 6 ms a frame for
    decode1's map alone). Three exact rewrites, where every piece is whole 16-channel blocks (decode1 and the
    bottleneck's gates; decode2's and decode3's 20- and 40-channel halves would be padded):
    `pieces_computed_apart`, `one_minus_sigmoid_as_hard_sigmoid`, `states_read_blocked`. Inputs, outputs and
    values stay (a drop-in for the official file). Static graphs only: in the dynamic one ONNX Runtime cannot
    prove the pieces' shapes equal and keeps their sums plain (measured: no faster)."""
    return states_read_blocked(one_minus_sigmoid_as_hard_sigmoid(pieces_computed_apart(graph)))


def pieces_computed_apart(graph):
    """Write each channel `Split` of an activated sum of convolutions (`act(conv_a(x) + conv_b(y) ...)`, read only
    through the split) whose pieces are whole blocks as one such sum per piece, each convolution's filters cut
    to the piece: no output is computed twice, and every piece is made where it is used."""
    import numpy as np
    from onnx import helper, numpy_helper
    weights, producers, readers = graph_index(graph)

    def sum_of_convolutions(name, found):
        node = producers.get(name)
        if node is None or readers.get(name) != 1:
            return False
        found.append(node)
        if node.op_type == "Add":
            return all(sum_of_convolutions(part, found) for part in node.input)
        return (node.op_type == "Conv" and node.input[1] in weights
                and all(a.i == 1 for a in node.attribute if a.name == "group"))

    replaced, removed = {}, set()
    for split in graph.graph.node:
        if split.op_type != "Split" or next((a.i for a in split.attribute if a.name == "axis"), 0) != 1:
            continue
        sizes = next((list(a.ints) for a in split.attribute if a.name == "split"), None)
        if sizes is None and len(split.input) > 1 and split.input[1] in weights:
            sizes = numpy_helper.to_array(weights[split.input[1]]).tolist()
        activation, tree = producers.get(split.input[0]), []
        if (not sizes or any(size % BLOCK_CHANNELS for size in sizes) or activation is None
                or activation.op_type not in ("Relu", "Sigmoid", "Tanh") or readers[split.input[0]] != 1
                or not sum_of_convolutions(activation.input[0], tree)):
            continue
        nodes, start = [], 0
        for piece, (size, output) in enumerate(zip(sizes, split.output)):
            def rebuilt(name):
                node = producers[name]
                stem = f"{node.name or node.output[0]}_piece{piece}"
                if node.op_type == "Add":
                    nodes.append(helper.make_node("Add", [rebuilt(node.input[0]), rebuilt(node.input[1])], [stem],
                                                  name=stem))
                    return stem
                inputs = [node.input[0], f"{stem}_weight"]
                graph.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(
                    numpy_helper.to_array(weights[node.input[1]])[start:start + size]), inputs[1]))
                if len(node.input) > 2 and node.input[2]:
                    inputs.append(f"{stem}_bias")
                    graph.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(
                        numpy_helper.to_array(weights[node.input[2]])[start:start + size]), inputs[2]))
                nodes.append(helper.make_node("Conv", inputs, [stem], name=stem,
                                              **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
                return stem
            nodes.append(helper.make_node(activation.op_type, [rebuilt(activation.input[0])], [output],
                                          name=f"{activation.name or activation.output[0]}_piece{piece}"))
            start += size
        replaced[id(split)] = nodes
        removed |= {id(node) for node in tree} | {id(activation)}
    kept = []
    for node in graph.graph.node:
        if id(node) in replaced:
            kept.extend(replaced[id(node)])
        elif id(node) not in removed:
            kept.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    log.debug("computed %d splits' pieces apart", len(replaced))
    return prune(graph)


def one_minus_sigmoid_as_hard_sigmoid(graph):
    """`1 - z` of a sigmoid's `z` (the ConvGRU's update gate) as `HardSigmoid(z)` with alpha -1 and beta 1, which
    ONNX Runtime runs blocked: `-z + 1` rounds once, as `1 - z` does, and z in [0, 1] is never clipped."""
    from onnx import helper, numpy_helper
    initializers, producers, _ = graph_index(graph)
    constants = {name: numpy_helper.to_array(initializers[name]) for node in graph.graph.node
                 if node.op_type == "Sub" for name in node.input[:1] if name in initializers}
    constants.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in graph.graph.node
                      if node.op_type == "Constant" and node.attribute[0].name == "value"})
    for i, node in enumerate(graph.graph.node):
        one, z = (node.input if node.op_type == "Sub" else ("", ""))
        if (one in constants and constants[one].size == 1 and float(constants[one].reshape(())) == 1.0
                and z in producers and producers[z].op_type == "Sigmoid"):
            graph.graph.node[i].CopyFrom(helper.make_node("HardSigmoid", [z], list(node.output), name=node.name,
                                                          alpha=-1.0, beta=1.0))
    return prune(graph)


def states_read_blocked(graph):
    """Read each ConvGRU state input that is whole blocks through a 1x1 `MaxPool`, an exact identity ONNX Runtime
    runs blocked: the state is reordered once, and the gate products with it stay blocked. A state is the input
    both a convolution and a product read."""
    from onnx import helper
    readers = {}
    for node in graph.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    states = [value.name for value in graph.graph.input if {"Conv", "Mul"} <= readers.get(value.name, set())]
    blocked = {name: f"{name}_blocked" for name, count in channel_counts(graph, states).items()
               if count % BLOCK_CHANNELS == 0}
    for node in graph.graph.node:
        node.input[:] = [blocked.get(name, name) for name in node.input]
    pools = [helper.make_node("MaxPool", [name], [read], name=read, kernel_shape=[1, 1])
             for name, read in blocked.items()]
    nodes = pools + list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return graph


def depthwise_filters_joined(graph):
    """Run the depthwise convolutions that share one filter (the deep guided filter's four 3x3 box filters, over
    `x`, `y`, `x*y` and `x*x`, 4 channels each) as one over their maps joined, split after, where together they are
    whole 16-channel blocks. ONNX Runtime runs each alone in its blocked layout padded from 4 channels to 16, so
    every filter read and wrote four times its map, with a reorder on each side (at 1080p, ratio 0.25, 4.5 ms for
    the four; joined, 1.5 ms with the join and split). Each channel is filtered as before: outputs are the same."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnxruntime.transformers.onnx_model import OnnxModel
    initializers, _, _ = graph_index(graph)
    weights, groups = {}, {}
    for node in graph.graph.node:
        if node.op_type != "Conv" or len(node.input) != 2 or node.input[1] not in initializers:
            continue
        weight = weights.setdefault(node.input[1], numpy_helper.to_array(initializers[node.input[1]]))
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if weight.shape[1] == 1 and group == weight.shape[0] > 1:
            groups.setdefault(node.input[1], []).append(node)
    channels_of = channel_counts(graph, [node.input[0] for nodes in groups.values() for node in nodes])
    joined = {}
    for name, nodes in groups.items():
        channels = [weights[name].shape[0]] * len(nodes)
        if len(nodes) < 2 or sum(channels) % BLOCK_CHANNELS or any(
                channels_of.get(node.input[0]) != count for node, count in zip(nodes, channels)):
            continue
        stem = nodes[0].name or nodes[0].output[0]
        graph.graph.initializer.append(
            numpy_helper.from_array(np.concatenate([weights[name]] * len(nodes)), f"{stem}_joined_weight"))
        attributes = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
        attributes["group"] = sum(channels)
        # the opset-12 Split (sizes as an attribute): it runs on the fp32 graph, before int8 moves to opset 13
        split = helper.make_node("Split", [f"{stem}_joined"], [n.output[0] for n in nodes],
                                 name=f"{stem}_joined_split", axis=1, split=channels)
        joined[id(nodes[0])] = [
            helper.make_node("Concat", [n.input[0] for n in nodes], [f"{stem}_joined_input"],
                             name=f"{stem}_joined_input", axis=1),
            helper.make_node("Conv", [f"{stem}_joined_input", f"{stem}_joined_weight"], [f"{stem}_joined"],
                             name=f"{stem}_joined", **attributes), split]
        joined.update({id(node): [] for node in nodes[1:]})
    if not joined:
        return graph
    nodes = [new for node in graph.graph.node for new in joined.get(id(node), [node])]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    model = OnnxModel(prune(graph))
    model.topological_sort()  # a joined filter reads maps made after the first of its parts
    return model.model


def resize_to_sizes(graph):
    """Give each `Resize` that scales by a factor the integer output size shape inference found instead:
    TensorRT builds static engines from sizes, and sizes read the same in every runtime."""
    import numpy as np
    from onnx import numpy_helper
    shapes = inferred_shapes(graph)
    for node in graph.graph.node:
        if node.op_type != "Resize" or (len(node.input) > 3 and node.input[3]):
            continue
        sizes, no_scales = f"{node.output[0]}_sizes", f"{node.output[0]}_no_scales"
        graph.graph.initializer.extend([numpy_helper.from_array(np.array(shapes[node.output[0]], np.int64), sizes),
                                        # opset 12 Resize needs a scales input: an empty one means "use sizes"
                                        numpy_helper.from_array(np.zeros(0, np.float32), no_scales)])
        del node.input[2:]
        node.input.extend([no_scales, sizes])
    return graph


def prune(graph):
    """Drop the initializers and Constant nodes nothing reads any more (the replaced scales)."""
    used = {name for node in graph.graph.node for name in node.input} | {o.name for o in graph.graph.output}
    kept = [n for n in graph.graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    used = {name for node in graph.graph.node for name in node.input}
    kept_init = [i for i in graph.graph.initializer if i.name in used]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept_init)
    return graph


def simplify(graph):
    import onnxsim
    simplified, ok = onnxsim.simplify(graph)  # no input shapes given: dynamic dims stay dynamic
    if not ok:
        raise ExportError("onnxsim could not prove the simplified graph equal to the exported one: "
                           "export with --no-simplify")
    return simplified


def to_fp16(graph):
    """src, states and outputs fp16; `downsample_ratio` and the scales it builds stay fp32, so a ratio
    such as 0.4 is not rounded (which would change the downsampled size)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel
    nodes = graph.graph.node
    ratio_users = [node for node in nodes if "downsample_ratio" in node.input]
    their_inputs = {name for node in ratio_users for name in node.input}
    # the constant [1, 1] joined with the ratio stays fp32 too, or a Cast lands out of topological order
    constants = [node for node in nodes if node.op_type == "Constant" and node.output[0] in their_inputs]
    converted = OnnxModel(convert_float_to_float16(graph, keep_io_types=["downsample_ratio"],
                                                   node_block_list=[node.name for node in ratio_users + constants]))
    converted.topological_sort()  # the converter appends its Casts at the end; onnx.checker wants order
    return constant_casts_folded(converted.model)


def constant_casts_folded(graph):
    """Casts of constants replaced by the constants cast: the converter stores a Resize's constant scales in fp16
    and casts them back to the fp32 that Resize takes, which leaves the scales computed at run time (TensorRT
    needs them constant, `tensorrt_check`)."""
    from onnx import helper, numpy_helper
    values = {init.name: init for init in graph.graph.initializer}
    values.update({node.output[0]: next(a.t for a in node.attribute if a.name == "value")
                   for node in graph.graph.node if node.op_type == "Constant" and node.attribute[0].name == "value"})
    kept = []
    for node in graph.graph.node:
        if node.op_type == "Cast" and node.input[0] in values:
            target = helper.tensor_dtype_to_np_dtype(next(a.i for a in node.attribute if a.name == "to"))
            folded = numpy_helper.to_array(values[node.input[0]]).astype(target)
            graph.graph.initializer.append(numpy_helper.from_array(folded, node.output[0]))
        else:
            kept.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    return graph


def export_onnx(model, path, precision: str, options) -> None:
    import onnx
    import onnxruntime
    import onnxsim

    if precision == "fp16" and model.refiner_name == "fast_guided_filter":
        raise UsageError("the fast guided filter cannot be exported to ONNX fp16: its eps (1e-5) and local "
                          "variances vanish in half precision (alpha off by 0.27); export fp32, or fp16 with "
                          "the deep guided filter")
    graph = depthwise_filters_joined(convolutions_split_at_concats(fp32_graph(model, options)))
    if precision == "fp32" and options.static:
        graph = blocked_recurrent_blocks(graph)
    if precision == "fp16":
        graph = to_fp16(graph)
    if precision == "int8":
        from .int8 import quantize_onnx
        graph = quantize_onnx(model, graph, options)
    onnx.checker.check_model(graph, full_check=True)
    static = bool(options.static)
    if static:
        from .tensorrt_check import check_tensorrt_ready
        check_tensorrt_ready(graph, "the static ONNX graph")
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    metadata = ArtifactMetadata.for_export(
        model, "onnx", precision, {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                                   "onnxsim": onnxsim.__version__}, options, opset=opset,
        simplified=bool(options.simplify or static))
    onnx.helper.set_model_props(graph, metadata.to_strings())
    onnx.save(graph, str(Path(path)))
    log.info("wrote ONNX %s (%d nodes) to %s", precision, len(graph.graph.node), path)


def fp32_graph(model, options):
    """The fp32 graph every precision starts from: static at the options' resolution and ratio, or dynamic."""
    if options.static:
        return trace_static_onnx(model, tuple(options.resolution), float(options.downsample_ratio))
    graph = trace_to_onnx(model)
    return simplify(graph) if options.simplify else graph


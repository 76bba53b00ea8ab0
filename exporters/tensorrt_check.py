"""Is an ONNX graph TensorRT-ready by construction? The forms TensorRT's ONNX parser rejects or cannot build
a static engine from, checked on the graph itself (no TensorRT needed), so any exporter can call it.

Rejected: any dynamic or unknown dimension on an input, output or inferred tensor; a shape-computation
subgraph (Shape, Gather on shapes, ConstantOfShape, NonZero...); a `Resize` whose scales or sizes are not
constants, or that is given float scales instead of integer sizes ("shape tensor must have type Int32" on
the official download); `Slice`, `Reshape`, `Expand`, `Pad`, `Tile` with a non-constant shape argument;
float64 tensors (TensorRT has no double).
"""
from typing import List

from rvm.errors import ExportError

SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "NonZero", "Range", "Loop", "If", "Scan"}
# op -> positions of inputs that must be constants (shape-like arguments)
CONSTANT_ARGUMENTS = {"Slice": (1, 2, 3, 4), "Reshape": (1,), "Expand": (1,), "Pad": (1, 2), "Tile": (1,),
                      "Resize": (1, 2, 3), "Unsqueeze": (1,), "Squeeze": (1,), "Split": (1,)}
DOUBLE = 11  # onnx.TensorProto.DOUBLE


def tensorrt_problems(graph) -> List[str]:
    """Everything in `graph` (an onnx.ModelProto) that keeps it from being a static TensorRT graph."""
    from onnx import shape_inference
    graph = shape_inference.infer_shapes(graph)
    problems = []
    values = list(graph.graph.input) + list(graph.graph.output) + list(graph.graph.value_info)
    for value in values:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        if not tensor.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            problems.append(f"tensor {value.name} has a dynamic or unknown shape {shown}")
        if tensor.elem_type == DOUBLE:
            problems.append(f"tensor {value.name} is float64")
    constants = {i.name for i in graph.graph.initializer}
    constants |= {n.output[0] for n in graph.graph.node if n.op_type == "Constant"}
    for node in graph.graph.node:
        where = f"{node.op_type} {node.name or node.output[0]}"
        if node.op_type in SHAPE_OPS:
            problems.append(f"{where}: shape computation left in the graph")
        for position in CONSTANT_ARGUMENTS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] and node.input[position] not in constants:
                problems.append(f"{where}: input {position} ({node.input[position]}) is computed at run time")
        if node.op_type == "Resize" and not _has_integer_sizes(node, graph):
            problems.append(f"{where}: float scales instead of integer sizes")
    return problems


def _has_integer_sizes(node, graph) -> bool:
    if len(node.input) < 4 or not node.input[3]:
        return False
    for init in graph.graph.initializer:
        if init.name == node.input[3]:
            return len(init.dims) == 1 and init.dims[0] == 4
    return any(n.op_type == "Constant" and n.output[0] == node.input[3] for n in graph.graph.node)


def check_tensorrt_ready(graph, what: str = "graph") -> None:
    problems = tensorrt_problems(graph)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ExportError(f"{what} is not a static TensorRT-ready graph: {shown}")

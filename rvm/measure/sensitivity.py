"""`rvm sensitivity`: what int8 costs each part of the network. Each unit (an encoder stage, LR-ASPP, a decoder
block, the projection, the refiner) is quantized alone, everything else left in float, and its alpha is compared
with PyTorch fp32 on a clip in the paper's units; beside it, the same for the default int8 graph (KEEP_FP32 in
float) and for everything in int8. This is the measurement behind `rvm.exporters.int8.KEEP_FP32`
(docs/static-int8.md, INT8).

ONNX Runtime QDQ, the dynamic graph, calibrated once on clips other than the one compared on, with the state
flowing as in `rvm export --precision int8`.
"""
import logging
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

from tqdm import tqdm

from rvm.errors import UsageError

log = logging.getLogger(__name__)

TOP_LEVEL = ("backbone", "aspp", "decoder", "project_mat", "refiner")  # the network's modules, in data order
SPLIT = ("backbone", "decoder")  # split one level further: one unit per encoder stage and per decoder block
DEFAULT_SET, ALL_INT8 = "default (ONNX_KEEP_FP32 in float)", "everything int8"


@dataclass
class SensitivityRow:
    unit: str  # a unit int8 alone, or DEFAULT_SET / ALL_INT8
    int8_nodes: int  # nodes not excluded from quantization (ops without an int8 form stay float regardless)
    mad: float  # alpha MAD x1e-3 against PyTorch fp32
    dtssd: float  # x1e-2
    pha_max: float
    drift: float  # mean alpha error of the last third of frames over the first third
    kept_in_float_by_default: Optional[bool] = None


def unit_of(node_name: str) -> Optional[str]:
    """`backbone/features.3`, `decoder/decode1`, `aspp`, `refiner`...; None for nodes outside any module (the
    input's downsampling), which stay float."""
    parts = node_name.split("/")[1:-1]
    if not parts:
        return None
    if parts[0] in SPLIT and len(parts) > 1:
        return f"{parts[0]}/{parts[1]}"
    return parts[0]


def units_of(graph) -> List[str]:
    """The graph's units in the network's order: encoder stages, LR-ASPP, decoder blocks, projection, refiner."""
    units = {u for u in (unit_of(n.name) for n in graph.graph.node) if u is not None}
    return sorted(units, key=_network_order)


def _network_order(unit: str):
    """Module order, then stage number (`features.2` before `features.10`; the decoder from decode4, where data
    enters it, to decode0); a module's own nodes before its sub-blocks."""
    top, _, below = unit.partition("/")
    digits = "".join(c for c in below if c.isdigit())
    number = int(digits) if digits else None
    if number is not None and top == "decoder":
        number = -number
    return (TOP_LEVEL.index(top) if top in TOP_LEVEL else len(TOP_LEVEL), number is not None, number or 0, unit)


def run_sensitivity(model, frames, ratio: float, calibration: str, units: Optional[Sequence[str]] = None,
                    calibration_frames: int = 16) -> List[SensitivityRow]:
    import onnx
    import onnxruntime as ort

    from rvm.compare import compare
    from rvm.exporters import ExportOptions, export
    from rvm.exporters.int8 import ONNX_KEEP_FP32, calibration_samples, kept_in_float, qdq_ready, quantize_qdq
    from rvm.runtimes.onnxruntime import OnnxRuntime, session_options
    from rvm.runtimes.pytorch import PyTorchRuntime

    with tempfile.TemporaryDirectory(prefix="rvm-sensitivity-") as folder:
        graph = qdq_ready(onnx.load(str(export(model, "onnx", "fp32", folder, options=ExportOptions(validate=False)))))
    names = [n.name for n in graph.graph.node]
    known = units_of(graph)
    units = list(units or known)
    unknown = [u for u in units if u not in known]
    if unknown:
        raise UsageError(f"unknown unit(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    options = ExportOptions(calibration=calibration, downsample_ratio=ratio)
    samples = calibration_samples(model, options, with_ratio=True, frames_per_source=calibration_frames)
    reference = PyTorchRuntime(model, device="cpu")
    default_float = set(kept_in_float(names, ONNX_KEEP_FP32))
    trials = [(unit, [n for n in names if unit_of(n) != unit]) for unit in units]
    trials += [(DEFAULT_SET, sorted(default_float)), (ALL_INT8, [])]
    rows = []
    for unit, float_nodes in tqdm(trials, desc="int8 sensitivity", unit="graph"):
        quantized = quantize_qdq(graph, samples, float_nodes)
        session = ort.InferenceSession(quantized.SerializeToString(), session_options(),
                                       providers=["CPUExecutionProvider"])
        result = compare(reference, OnnxRuntime(session, path=unit), frames, ratio)
        in_unit = [n for n in names if unit_of(n) == unit]
        rows.append(SensitivityRow(
            unit, len(names) - len(float_nodes), result.metrics.mad, result.metrics.dtssd, result.pha_max, result.drift,
            all(n in default_float for n in in_unit) if in_unit else None))
        log.info("%s: alpha MAD %.2f", unit, result.metrics.mad)
    return rows


def to_markdown(rows: Sequence[SensitivityRow]) -> str:
    lines = ["| int8 | nodes open to int8 | alpha MAD (1e-3) | dtSSD (1e-2) | alpha max | drift | float by default |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        default = "" if row.kept_in_float_by_default is None else ("yes" if row.kept_in_float_by_default else "no")
        lines.append(f"| {row.unit} | {row.int8_nodes} | {row.mad:.2f} | {row.dtssd:.2f} | {row.pha_max:.3f} | "
                     f"{row.drift:.2f} | {default} |")
    return "\n".join(lines)

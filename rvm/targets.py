"""The rows of parity and bench: every registered format and precision (`targets()`), the artifacts made elsewhere
that ours must agree with (`PEERS`, the official downloads), and the PyTorch reference every row is measured
against (`REFERENCE`). Built from the registry (`rvm.formats`); nothing here branches on a format's name.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from rvm.formats import FORMATS, ExportOptions, Format, Resolution


@dataclass(frozen=True)
class Reference:
    """PyTorch eager fp32 on the checkpoint: the reference every format is measured against, not an exported
    format. Its row is `name` in parity, `key` in bench (every ratio is to it, measured in the same run)."""
    name: str
    precision: str
    runtime: str  # "module:Class", as a format's `runtime`

    @property
    def key(self) -> Tuple[str, str]:
        return (self.name, self.precision)


REFERENCE = Reference("pytorch", "fp32", "rvm.runtimes.pytorch:PyTorchRuntime")


@dataclass(frozen=True)
class Peer:
    """An artifact made elsewhere that ours must agree with: run by the same runtime, measured in the same rows."""
    name: str
    format: str
    precision: str
    checkpoint: str  # name in the checkpoint manifest (found in $RVM_CHECKPOINT_DIR, the cache, or downloaded)
    variant: str
    refiner: str


PEERS: Tuple[Peer, ...] = (
    Peer("onnx (official download)", "onnx", "fp32", "rvm_mobilenetv3_fp32.onnx", "mobilenetv3", "deep_guided_filter"),
    Peer("openvino (official download)", "openvino", "fp32", "rvm_mobilenetv3_fp32.onnx", "mobilenetv3",
         "deep_guided_filter"),
)
# the yardstick of speed: what a user runs instead of our exports, the official fp32 ONNX in ONNX Runtime
OFFICIAL = PEERS[0]


@dataclass(frozen=True)
class Target:
    """One row of parity and bench: an artifact of `format` in `precision`, exported from the model under test,
    or a `peer` artifact made elsewhere."""
    name: str
    format: Format
    precision: str
    peer: Optional[Peer] = None
    static: bool = False  # the static artifact of a format whose static profile is optional

    @property
    def is_static(self) -> bool:
        """Its artifact has a fixed resolution: a static row, or a format that is always static."""
        return self.static or self.format.static == "always"

    def export_options(self, resolution: Resolution, downsample_ratio: float,
                       calibration: Optional[str] = None) -> ExportOptions:
        """Static rows are exported for the frames' own size and ratio; the rest keep shapes dynamic. Precisions
        that need calibration get `calibration` (a source other than the frames compared; None: the export refuses)."""
        static = self.is_static
        return ExportOptions(resolution=resolution if static else None, downsample_ratio=downsample_ratio,
                             static=static, validate=False,
                             calibration=calibration if self.precision in self.format.calibrated else None)


def targets(formats: Optional[Sequence[str]] = None) -> List[Target]:
    """Every registered format and precision, each peer beside its format; narrowed to `formats` if given."""
    rows = []
    for entry in FORMATS.values():
        if formats is not None and entry.name not in formats:
            continue
        rows += [Target(entry.name, entry, precision) for precision in entry.precisions]
        rows += [Target(f"{entry.name} static", entry, precision, static=True) for precision in entry.static_rows]
        rows += [Target(peer.name, entry, peer.precision, peer) for peer in PEERS if peer.format == entry.name]
    return rows

"""TorchScript export, drop-in compatible with the official `rvm_*_fp32.torchscript` / `_fp16.torchscript`.

Scripted, not traced: tracing bakes the downsample ratio and the `None` initial states, scripting keeps
`model(src, r1, r2, r3, r4, downsample_ratio)` with a runtime float ratio, `None` states and `[B,T,C,H,W]`
input. Not frozen: unfrozen, it loads onto any device with `map_location`, as the official ones do;
`TorchScriptRuntime(freeze=True)` freezes at load, which `rvm bench` measures (within noise at 1080p on CPU).
`optimize_for_inference` was slower and ties the graph to CPU (MKL-DNN) kernels.
"""
import copy
import logging
from pathlib import Path

import torch

from rvm.metadata import TORCHSCRIPT_METADATA_FILE, ArtifactMetadata

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def export_torchscript(model, path, precision: str, options) -> None:
    # a copy, so that halving for fp16 leaves the caller's model (the validation reference) in fp32
    scripted = torch.jit.script(copy.deepcopy(model).eval().cpu().to(DTYPES[precision]))
    metadata = ArtifactMetadata.for_export(model, "torchscript", precision, options=options)
    torch.jit.save(scripted, str(Path(path)), _extra_files={TORCHSCRIPT_METADATA_FILE: metadata.to_json()})
    log.info("wrote TorchScript %s to %s", precision, path)

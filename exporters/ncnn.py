"""NCNN export via pnnx from the reference PyTorch model: fixed resolution, ratio baked, the recurrent state as
inputs `r1i..r4i` and outputs `r1o..r4o` like every other format.

The artifact is a folder: param, bin and metadata files (`rvm.formats.NCNN_*`, `rvm.metadata.METADATA_FILE`).
pnnx names blobs `in0..in4` / `out0..out5`; they are renamed to the contract names (src, r1i.., fgr, pha, r1o..)
in the param file, so clients look them up as everywhere else. fp16 stores the weights in fp16 (the runtime also
turns ncnn's fp16 storage and arithmetic on, as on a phone).

One graph change: the ConvGRU broadcasts a [1,1,1,1] zero state with `expand_as`, which ncnn has no layer for.
Here the states are always full-size, so the export traces a copy whose GRUs take the state as it is.
"""
import copy
import logging
import re
import shutil
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

from rvm.contracts import ONNX_INPUTS, ONNX_OUTPUTS
from rvm.formats import NCNN_BIN_FILE, NCNN_PARAM_FILE
from rvm.iospec import state_shapes
from rvm.metadata import METADATA_FILE, ArtifactMetadata

from .onnx import StaticMatting

log = logging.getLogger(__name__)
BLOB_NAMES = {**{f"in{i}": name for i, name in enumerate(ONNX_INPUTS[:5])},
              **{f"out{i}": name for i, name in enumerate(ONNX_OUTPUTS)}}


def with_full_size_states(model: nn.Module) -> nn.Module:
    """A copy whose ConvGRUs skip the zero-state broadcast (`expand_as`, which ncnn cannot run)."""
    from rvm.model.decoder import ConvGRU

    def step_only(gru, x, h, frames_per_batch):
        h = gru.step(x, h)
        return h, h
    model = copy.deepcopy(model).float().cpu().eval()
    for module in model.modules():
        if isinstance(module, ConvGRU):
            module.forward = types.MethodType(step_only, module)
    return model


def rename_blobs(param_text: str) -> str:
    return re.sub(r"(?<=\s)(in\d|out\d)(?=\s|$)", lambda m: BLOB_NAMES.get(m.group(1), m.group(1)), param_text,
                  flags=re.MULTILINE)


def export_ncnn(model, path, precision: str, options) -> None:
    import pnnx
    resolution, ratio = tuple(options.resolution), float(options.downsample_ratio)
    width, height = resolution
    wrapper = StaticMatting(with_full_size_states(model), ratio).eval()
    example = (torch.rand(1, 3, height, width),
               *[torch.zeros(s) for s in state_shapes(model.variant, resolution, ratio)])
    folder = Path(path)
    with tempfile.TemporaryDirectory() as work:
        with torch.no_grad():
            pnnx.export(wrapper, str(Path(work) / "model.pt"), example, fp16=precision == "fp16")
        folder.mkdir(parents=True)
        # pnnx names its outputs after the traced file's stem: model.pt -> the NCNN file names
        (folder / NCNN_PARAM_FILE).write_text(rename_blobs((Path(work) / NCNN_PARAM_FILE).read_text()))
        shutil.copyfile(Path(work) / NCNN_BIN_FILE, folder / NCNN_BIN_FILE)
    metadata = ArtifactMetadata.for_export(model, "ncnn", precision, {"pnnx": pnnx.__version__}, options)
    (folder / METADATA_FILE).write_text(metadata.to_json())
    log.info("wrote NCNN %s to %s", precision, folder)

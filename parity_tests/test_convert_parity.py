"""`Runtime.load(artifact).convert(ConvertRequest(...))` writes the same alpha as the PyTorch reference, for the
ONNX, TorchScript and TF artifacts: the deployment path end to end (decode, runtime, encode), not only tensors."""
import numpy as np
import pytest
import torch

from rvm import MattingNetwork, formats
from rvm.exporters import ExportOptions
from rvm.exporters.store import ArtifactStore
from rvm.media.request import ConvertRequest
from rvm.media.video import read_frames
from rvm.runtimes import load
from rvm.runtimes.pytorch import PyTorchRuntime
from tests.conftest import CLIPS, DGF_WEIGHTS, need

SIZE, RATIO = (324, 184), 0.5  # the clip upscaled 2x: the network sees the person at the clip's own size


@pytest.fixture(scope="module")
def model():
    model = MattingNetwork("mobilenetv3", "deep_guided_filter")
    model.load_state_dict(torch.load(need(DGF_WEIGHTS)), strict=False)
    return model.eval()


def convert_alpha(runtime, folder) -> np.ndarray:
    """Alpha of person_a as a lossless PNG sequence, through Runtime.convert."""
    summary = runtime.convert(ConvertRequest(str(need(CLIPS / "person_a.mp4")), input_resize=SIZE,
                                             downsample_ratio=RATIO, output_alpha=str(folder),
                                             output_type="png_sequence", progress=False))
    assert summary.frames == 58
    return np.stack(read_frames(folder)).astype(np.float32) / 255


@pytest.fixture(scope="module")
def reference_alpha(model, tmp_path_factory):
    return convert_alpha(PyTorchRuntime(model, device="cpu"), tmp_path_factory.mktemp("ref") / "alpha")


@pytest.mark.parametrize("fmt,precision", [("onnx", "fp32"), ("onnx", "fp16"), ("torchscript", "fp32"),
                                           ("tf", "fp32")])
def test_converted_alpha_matches_pytorch(model, reference_alpha, fmt, precision, tmp_path):
    artifact = ArtifactStore().get(model, fmt, precision, ExportOptions(validate=False))  # the run's store
    with load(artifact, device="cpu") as runtime:
        alpha = convert_alpha(runtime, tmp_path / "alpha")
    assert alpha.shape == reference_alpha.shape and alpha.shape[:3] == (58, SIZE[1], SIZE[0])
    assert 0.1 < reference_alpha.mean() < 0.9  # a real matte, not an empty one
    error = np.abs(alpha - reference_alpha)
    # 8-bit PNGs: a value near a rounding boundary may land one level apart whatever the backend
    assert error.max() <= formats.get(fmt).tolerance(precision).pha_max + 1 / 255 + 1e-6

"""The reference model against outputs of the official implementation (../shared/golden)."""
import json

import numpy as np
import pytest
import torch

from rvm import MattingNetwork

from .conftest import GOLDEN, need

CONFIGS = {
    "mobilenetv3_deep_guided_filter_real": ("mobilenetv3", "deep_guided_filter", "dgf_real"),
    "mobilenetv3_fast_guided_filter_real": ("mobilenetv3", "fast_guided_filter", "fgf_real"),
    "mobilenetv3_deep_guided_filter_seed0": ("mobilenetv3", "deep_guided_filter", 0),
    "mobilenetv3_fast_guided_filter_seed1": ("mobilenetv3", "fast_guided_filter", 1),
    "resnet50_deep_guided_filter_seed2": ("resnet50", "deep_guided_filter", 2),
    "resnet50_fast_guided_filter_seed3": ("resnet50", "fast_guided_filter", 3),
}
CASES = ("r1.0", "r0.5", "r0.25")
TOL = 1e-5


def seeded_state_dict(variant: str, refiner: str, seed: int) -> dict:
    """The golden README's recipe: draws in state_dict_layout.json order."""
    layout = json.loads((GOLDEN.parent / "spec" / "state_dict_layout.json").read_text())[variant]
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in layout.items():
        if refiner == "fast_guided_filter" and key.startswith("refiner."):
            continue
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            value = np.zeros(shape)
        elif key.endswith("running_mean"):
            value = 0.1 * rng.standard_normal(shape)
        elif key.endswith("running_var"):
            value = 1 + 0.1 * rng.random(shape)
        elif key.endswith(".weight") and len(shape) == 1:
            value = 1 + 0.1 * rng.standard_normal(shape)
        elif key.endswith(".bias"):
            value = 0.1 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) * np.sqrt(1 / np.prod(shape[1:]))
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    state["project_mat.conv.weight"] *= 0.1
    if "refiner.conv.6.weight" in state:
        state["refiner.conv.6.weight"] *= 0.1
        state["refiner.box_filter.weight"] = state["refiner.box_filter.weight"] * 0.03 + 1 / 9
    state["project_mat.conv.bias"][3] = 0.5
    for key in state:
        if key.endswith("num_batches_tracked"):
            state[key] = state[key].long()
    return state


def with_seeded_seg_head(state: dict) -> dict:
    rng = np.random.default_rng(99)
    weight = rng.standard_normal((1, 16, 1, 1)) * np.sqrt(1 / 16)
    bias = 0.1 * rng.standard_normal((1,))
    return {**state, "project_seg.conv.weight": torch.tensor(weight, dtype=torch.float32),
            "project_seg.conv.bias": torch.tensor(bias, dtype=torch.float32)}


def golden_model(name: str) -> MattingNetwork:
    from .conftest import DGF_WEIGHTS, FGF_WEIGHTS
    variant, refiner, source = CONFIGS[name]
    if source == "dgf_real":
        state = with_seeded_seg_head(torch.load(need(DGF_WEIGHTS)))
    elif source == "fgf_real":
        state = with_seeded_seg_head(torch.load(need(FGF_WEIGHTS)))
    else:
        state = seeded_state_dict(variant, refiner, source)
    model = MattingNetwork(variant, refiner).eval()
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("name", [n for n in CONFIGS if "seed" in n])
def test_recipe_matches_recipe_check(name):
    checks = json.loads(need(GOLDEN / "recipe_check.json").read_text())[name]
    variant, refiner, seed = CONFIGS[name]
    state = seeded_state_dict(variant, refiner, seed)
    for key, expected in checks.items():
        tensor = state[key].double()
        assert tensor.flatten()[0].item() == pytest.approx(expected["first"], abs=1e-6)
        assert tensor.sum().item() == pytest.approx(expected["sum"], rel=1e-5, abs=1e-4)


@pytest.fixture(scope="module")
def inputs():
    return np.load(need(GOLDEN / "inputs.npz"))


def max_err(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().numpy() - b).max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_golden(name, inputs):
    golden = np.load(need(GOLDEN / f"{name}.npz"))
    model = golden_model(name)
    with torch.no_grad():
        for case in CASES:
            src = torch.from_numpy(inputs[f"{case}/src"])
            ratio = float(inputs[f"{case}/ratio"])
            rec = [None] * 4
            for t in range(src.shape[0]):
                fgr, pha, *rec = model(src[t:t + 1], *rec, downsample_ratio=ratio)
                assert max_err(pha[0], golden[f"{case}/pha"][t]) < TOL, (case, t)
            assert max_err(fgr[0], golden[f"{case}/fgr_last"]) < TOL, case
            for i, state in enumerate(rec, 1):
                assert max_err(state, golden[f"{case}/r{i}"]) < TOL, (case, f"r{i}")
            # the whole clip as one [1,T,3,H,W] chunk
            chunk = src.unsqueeze(0)
            fgr_c, pha_c, *rec_c = model(chunk, downsample_ratio=ratio)
            assert pha_c.shape == (1, src.shape[0], 1, *src.shape[2:])
            assert max_err(pha_c[0, -1], golden[f"{case}/chunk_pha_last"]) < TOL, case
            assert max_err(rec_c[3], golden[f"{case}/chunk_r4"]) < TOL, case
            seg, *_ = model(chunk, downsample_ratio=ratio, segmentation_pass=True)
            assert max_err(seg[0, -1], golden[f"{case}/seg_last"]) < TOL, case

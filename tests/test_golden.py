"""The reference model against outputs of the official implementation (../shared/golden)."""
import json
import os
import subprocess
import sys
from pathlib import Path

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

# Golden tolerances per refiner, (max abs, mean abs of alpha), derived from float rounding, not from a fit:
# our model run in float64 over the golden cases of the real weights gives how far float32 is from exact
# (`float32_gap`, measured here on 2026-11-30, any ATEN_CPU_CAPABILITY):
#   deep guided filter: worst 8.8e-6 (r1..r4 states; alpha 4.1e-6), mean alpha 2.7e-7
#   fast guided filter: worst 3.1e-4 (alpha and foreground: its eps 1e-5 amplifies rounding), mean alpha 3.2e-7
# The official implementation's float32 and ours, each on its own kernels, can sit on either side of exact: the
# bound is twice the gap, rounded up. `test_tolerances_are_twice_the_float32_gap` re-derives it on every run.
# (A flat 1e-5 failed the fast guided filter on CPUs without AVX-512: 1.0e-5 there, 3.6e-5 at
# ATEN_CPU_CAPABILITY=default.)
TOLERANCE = {"deep_guided_filter": (2e-5, 6e-7), "fast_guided_filter": (7e-4, 1e-6)}


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


def golden_errors(model, inputs, golden, carry_state: bool = True) -> dict:
    """Worst max and mean abs errors against the golden outputs, frame by frame with the state carried."""
    worst = {"max": 0.0, "pha_mean": 0.0}
    with torch.no_grad():
        for case in CASES:
            src = torch.from_numpy(inputs[f"{case}/src"])
            ratio = float(inputs[f"{case}/ratio"])
            rec = [None] * 4
            for t in range(src.shape[0]):
                fgr, pha, *rec = model(src[t:t + 1], *(rec if carry_state else [None] * 4), downsample_ratio=ratio)
                error = np.abs(pha[0].numpy() - golden[f"{case}/pha"][t])
                worst["max"] = max(worst["max"], float(error.max()))
                worst["pha_mean"] = max(worst["pha_mean"], float(error.mean()))
            worst["max"] = max(worst["max"], max_err(fgr[0], golden[f"{case}/fgr_last"]),
                               *(max_err(state, golden[f"{case}/r{i}"]) for i, state in enumerate(rec, 1)))
    return worst


def within(errors: dict, refiner: str) -> bool:
    max_tol, mean_tol = TOLERANCE[refiner]
    return errors["max"] <= max_tol and errors["pha_mean"] <= mean_tol


@pytest.mark.parametrize("name", list(CONFIGS))
def test_golden(name, inputs):
    golden = np.load(need(GOLDEN / f"{name}.npz"))
    model = golden_model(name)
    errors = golden_errors(model, inputs, golden)
    assert within(errors, model.refiner_name), errors
    max_tol = TOLERANCE[model.refiner_name][0]
    with torch.no_grad():
        for case in CASES:
            src = torch.from_numpy(inputs[f"{case}/src"])
            ratio = float(inputs[f"{case}/ratio"])
            # the whole clip as one [1,T,3,H,W] chunk
            chunk = src.unsqueeze(0)
            fgr_c, pha_c, *rec_c = model(chunk, downsample_ratio=ratio)
            assert pha_c.shape == (1, src.shape[0], 1, *src.shape[2:])
            assert max_err(pha_c[0, -1], golden[f"{case}/chunk_pha_last"]) < max_tol, case
            assert max_err(rec_c[3], golden[f"{case}/chunk_r4"]) < max_tol, case
            seg, *_ = model(chunk, downsample_ratio=ratio, segmentation_pass=True)
            assert max_err(seg[0, -1], golden[f"{case}/seg_last"]) < max_tol, case


REAL = {"deep_guided_filter": "mobilenetv3_deep_guided_filter_real",
        "fast_guided_filter": "mobilenetv3_fast_guided_filter_real"}


def float32_gap(name: str, inputs) -> dict:
    """How far our float32 model is from itself in float64 over the golden cases (max over alpha, foreground
    and states; mean over alpha)."""
    model32, model64 = golden_model(name), golden_model(name).double()
    gap = {"max": 0.0, "pha_mean": 0.0}
    with torch.no_grad():
        for case in CASES:
            src = torch.from_numpy(inputs[f"{case}/src"])
            ratio = float(inputs[f"{case}/ratio"])
            rec32, rec64 = [None] * 4, [None] * 4
            for t in range(src.shape[0]):
                fgr32, pha32, *rec32 = model32(src[t:t + 1], *rec32, downsample_ratio=ratio)
                fgr64, pha64, *rec64 = model64(src[t:t + 1].double(), *rec64, downsample_ratio=ratio)
                error = (pha32.double() - pha64).abs()
                gap["max"] = max(gap["max"], float(error.max()), float((fgr32.double() - fgr64).abs().max()))
                gap["pha_mean"] = max(gap["pha_mean"], float(error.mean()))
            gap["max"] = max(gap["max"], *(float((a.double() - b).abs().max()) for a, b in zip(rec32, rec64)))
    return gap


@pytest.mark.parametrize("refiner", list(REAL))
def test_tolerances_are_twice_the_float32_gap(refiner, inputs):
    """The bounds are grounded: at least twice the float32 rounding of this network, and not looser than 4x."""
    gap = float32_gap(REAL[refiner], inputs)
    max_tol, mean_tol = TOLERANCE[refiner]
    assert 2 * gap["max"] <= max_tol <= 4 * gap["max"], (gap, max_tol)
    assert 2 * gap["pha_mean"] <= mean_tol <= 4 * gap["pha_mean"], (gap, mean_tol)


@pytest.mark.parametrize("refiner", list(REAL))
@pytest.mark.parametrize("bug", ["one weight off by 1e-4", "state not carried"])
def test_a_real_bug_fails_the_tolerance(refiner, bug, inputs):
    name = REAL[refiner]
    golden = np.load(need(GOLDEN / f"{name}.npz"))
    model = golden_model(name)
    if bug == "one weight off by 1e-4":
        with torch.no_grad():
            model.project_mat.conv.bias[3] += 1e-4  # the alpha output's bias
    errors = golden_errors(model, inputs, golden, carry_state=bug != "state not carried")
    assert not within(errors, refiner), errors


@pytest.mark.slow
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_golden_on_other_kernel_paths(capability):
    """PyTorch picks its CPU kernels by instruction set: the golden check must hold on CPUs without AVX-512 too."""
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip(f"this run is already at ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']}")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "test_golden[ or twice_the"], env={**os.environ, "ATEN_CPU_CAPABILITY": capability},
                          capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout[-3000:]

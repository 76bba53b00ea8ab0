"""The RVM paper's metrics on mattes whose answer is known by hand."""
import numpy as np
import pytest

from rvm.metrics import MetricsAccumulator, conn, dtssd, grad, mad, mse


@pytest.fixture
def matte():
    yy, xx = np.mgrid[0:64, 0:96]
    return np.clip(1.5 - np.hypot(xx - 48, yy - 32) / 12, 0, 1).astype(np.float32)  # a soft disc


def test_identical_mattes_score_zero(matte):
    assert mad(matte, matte) == mse(matte, matte) == grad(matte, matte) == conn(matte, matte) == 0.0
    assert dtssd(matte, matte, matte, matte) == 0.0


def test_scaling_matches_the_paper(matte):
    shifted = np.clip(matte + 0.01, 0, 1)
    difference = shifted - matte
    assert mad(shifted, matte) == pytest.approx(np.abs(difference).mean() * 1e3, rel=1e-6)
    assert mse(shifted, matte) == pytest.approx((difference ** 2).mean() * 1e3, rel=1e-6)
    assert mad(np.ones_like(matte), np.zeros_like(matte)) == pytest.approx(1000.0)


def test_dtssd_sees_flicker_but_not_a_steady_offset(matte):
    offset = np.clip(matte + 0.05, 0, 1)
    assert dtssd(offset, offset, matte, matte) == 0.0  # the same error on both frames: no temporal change
    flicker = matte + 0.02 * (np.indices(matte.shape).sum(0) % 2)
    # the candidate changes by 0.02 on half the pixels while the reference stays: sqrt(0.5 * 0.02^2) * 1e2
    assert dtssd(flicker, matte, matte, matte) == pytest.approx(np.sqrt(0.5 * 0.02 ** 2) * 1e2, rel=1e-4)


def test_grad_and_conn_grow_with_damage(matte):
    blurred = (matte + np.roll(matte, 3, axis=1)) / 2
    holed = matte.copy()
    holed[28:36, 44:52] = 0  # a hole in the middle of the person
    assert 0 < grad(blurred, matte) and 0 < conn(holed, matte)
    assert conn(holed, matte) > conn(np.clip(matte + 0.01, 0, 1), matte)


def test_accumulator_averages_frames_and_dtssd_over_transitions(matte):
    metrics = MetricsAccumulator()
    frames = [matte, np.clip(matte + 0.1, 0, 1), matte]
    for frame in frames:
        metrics.add(frame[None], matte[None])
    result = metrics.result()
    assert result.mad == pytest.approx(np.mean([mad(f, matte) for f in frames]))
    assert result.dtssd == pytest.approx(np.mean([dtssd(frames[1], frames[0], matte, matte),
                                                  dtssd(frames[2], frames[1], matte, matte)]))
    single = MetricsAccumulator()
    single.add(matte, matte)
    assert single.result().dtssd is None

"""Optical flow units and direction on known motion; the One-Euro filter's behaviour."""
import cv2
import numpy as np
import pytest

from expotion_live.features.flow import FlowTracker
from expotion_live.features.one_euro import OneEuroFilter
from expotion_live.features.schema import FLOW_SHAPE


def _texture(width=640, height=480, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("fps, flow_width", [(30.0, 320), (15.0, 320), (30.0, 160)])
def test_flow_is_in_reference_pixels_per_thirtieth_of_a_second(fps, flow_width):
    # A 640-wide picture sliding right by 4 px per frame: 2 px of a 320-wide image per frame,
    # i.e. 2 reference units at 30 fps and 1 at 15 fps, whatever width the flow runs at.
    texture = _texture()
    tracker = FlowTracker(flow_width)
    assert tracker.process(texture, 0.0)[1] == 0.0                       # first frame: nothing to compare
    flow, energy = tracker.process(np.roll(texture, 4, axis=1), 1.0 / fps)
    assert flow.shape == FLOW_SHAPE and flow.dtype == np.float32
    inner = flow[:, 4:-4, 4:-4]                                          # away from the wrapped border
    expected = 2.0 * fps / 30.0
    assert np.median(inner[0]) == pytest.approx(expected, rel=0.15)
    assert abs(np.median(inner[1])) < 0.15 * expected
    assert 0.3 < energy < 1.0


def test_flow_of_a_still_picture_is_zero_and_reset_forgets_the_last_frame():
    texture = _texture(seed=1)
    tracker = FlowTracker()
    tracker.process(texture, 0.0)
    flow, energy = tracker.process(texture, 0.033)
    assert np.abs(flow).max() < 0.05 and energy < 0.05
    tracker.reset()
    flow, energy = tracker.process(np.roll(texture, 10, axis=0), 0.066)
    assert not flow.any() and energy == 0.0


def test_one_euro_passes_a_constant_and_follows_a_step_without_overshoot():
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    times = np.arange(60) / 30.0
    out = [smoother(np.array([0.2]), t)[0] for t in times[:30]]
    assert out == pytest.approx([0.2] * 30)
    step = [smoother(np.array([1.0]), t)[0] for t in times[30:]]
    assert all(0.2 < v <= 1.0 + 1e-6 for v in step)
    assert all(b >= a for a, b in zip(step, step[1:]))                   # monotone approach
    assert step[-1] > 0.95


def test_one_euro_removes_jitter_at_rest():
    rng = np.random.default_rng(0)
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0)
    noisy = 0.5 + 0.02 * rng.standard_normal((300, 3))
    out = np.array([smoother(x, k / 30.0) for k, x in enumerate(noisy)])
    assert out[30:].std(axis=0).max() < 0.5 * noisy.std(axis=0).min()       # ~1/3 at these settings


def test_one_euro_beta_trades_jitter_for_lag_on_fast_moves():
    times = np.arange(30) / 30.0
    ramp = 3.0 * times                                                   # a fast move: 3 units per second
    lag = {}
    for beta in (0.0, 2.0):
        smoother = OneEuroFilter(min_cutoff=1.0, beta=beta, d_cutoff=1.0)
        out = [smoother(np.array([x]), t)[0] for x, t in zip(ramp, times)]
        lag[beta] = ramp[-1] - out[-1]
    assert lag[2.0] < 0.5 * lag[0.0]


def test_one_euro_keeps_its_estimate_on_a_repeated_timestamp_and_reset_restarts():
    smoother = OneEuroFilter()
    smoother(np.array([0.0]), 1.0)
    first = smoother(np.array([1.0]), 1.1)
    assert smoother(np.array([5.0]), 1.1) == pytest.approx(first)
    smoother.reset()
    assert smoother(np.array([5.0]), 1.2) == pytest.approx([5.0])
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0.0)

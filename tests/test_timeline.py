"""The 50 Hz timeline: eq. 1 / eq. 3 interpolation on hand-made inputs, ring behaviour."""
import numpy as np
import pytest

from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, FRAME_RATE, GEOMETRY_DIM, MOTION_DIM, FeatureFrame
from expotion_live.features.timeline import FeatureTimeline, grid_times, interpolate


def test_interpolate_is_eq1_on_a_uniform_5hz_stream():
    # The paper's case: features at 5 Hz, wanted at 50 Hz. With t the fractional source
    # index, i = floor(t), alpha = t - i, z_hat = (1 - alpha) z_i + alpha z_{i+1}.
    times = np.arange(4) / 5.0
    z = np.array([[0.0, 10.0], [1.0, 20.0], [4.0, 0.0], [5.0, 5.0]])
    grid = np.arange(0, 31) / 50.0
    out = interpolate(times, z, grid)
    for g, row in zip(grid, out):
        t = g * 5.0
        i = min(int(np.floor(t + 1e-9)), 2)
        alpha = t - i
        np.testing.assert_allclose(row, (1 - alpha) * z[i] + alpha * z[i + 1], atol=1e-5)


def test_interpolate_irregular_times_and_edges_hold():
    times = np.array([1.0, 1.1, 1.4])
    z = np.array([[0.0], [1.0], [4.0]])
    grid = np.array([0.5, 1.0, 1.05, 1.1, 1.2, 1.4, 2.0])
    out = interpolate(times, z, grid)[:, 0]
    # 1.05 is halfway between frames 0 and 1; 1.2 is a third of the way from frame 1 to 2.
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 4.0], atol=1e-5)


def test_interpolate_keeps_trailing_shape_of_flow_fields():
    times = np.array([0.0, 0.04])
    flow = np.stack([np.zeros(FLOW_SHAPE), np.full(FLOW_SHAPE, 2.0)])
    out = interpolate(times, flow, np.array([0.01, 0.03]))
    assert out.shape == (2, *FLOW_SHAPE)
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.5, 1.5], atol=1e-6)


def _frame(t: float, value: float) -> FeatureFrame:
    frame = FeatureFrame(t=t, face_found=True, pose_found=True, motion_energy=value)
    frame.expression[:] = value
    frame.flow[:] = value
    return frame


def test_window_resamples_pushed_frames_onto_the_50hz_grid():
    timeline = FeatureTimeline(seconds=5)
    for k in range(31):                                   # a 30 fps camera, value = time in seconds
        timeline.push(_frame(100.0 + k / 30.0, k / 30.0))
    window = timeline.window(25)
    assert window.face.shape == (25, FACE_DIM)
    assert window.motion.shape == (25, MOTION_DIM)
    assert window.flow.shape == (25, *FLOW_SHAPE)
    assert window.t_end == pytest.approx(101.0)
    expected = 1.0 - np.arange(24, -1, -1) / FRAME_RATE   # linear input is reproduced exactly
    np.testing.assert_allclose(window.energy, expected, atol=1e-5)
    np.testing.assert_allclose(window.expression[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(window.flow[:, 1, 5, 7], expected, atol=1e-5)
    np.testing.assert_allclose(window.face[:, GEOMETRY_DIM - 1], 0.0)
    np.testing.assert_allclose(window.face[:, -1], 1.0)   # face_found


def test_window_at_an_explicit_end_and_grid_times():
    timeline = FeatureTimeline(seconds=5)
    for k in range(11):
        timeline.push(_frame(k / 10.0, k / 10.0))
    window = timeline.window(6, t_end=0.5)
    np.testing.assert_allclose(grid_times(6, 0.5), [0.4, 0.42, 0.44, 0.46, 0.48, 0.5])
    np.testing.assert_allclose(window.energy, [0.4, 0.42, 0.44, 0.46, 0.48, 0.5], atol=1e-5)


def test_empty_timeline_gives_a_window_with_nothing_found():
    window = FeatureTimeline(seconds=1).window(10)
    assert window.n_frames == 10
    assert not window.face.any() and not window.motion.any() and not window.flow.any()


def test_push_rejects_time_going_backwards_and_latest_is_the_newest():
    timeline = FeatureTimeline(seconds=1)
    assert timeline.push(_frame(1.0, 0.1))
    assert not timeline.push(_frame(1.0, 0.2))
    assert not timeline.push(_frame(0.5, 0.3))
    assert timeline.latest().motion_energy == pytest.approx(0.1)
    assert len(timeline) == 1


def test_ring_forgets_the_oldest_frames_when_full():
    timeline = FeatureTimeline(seconds=0.5)                # capacity = 0.5 s of a 60 fps camera + 2
    n = timeline.capacity + 20
    for k in range(n):
        timeline.push(_frame(k / 60.0, float(k)))
    assert len(timeline) == timeline.capacity
    window = timeline.window(3, t_end=0.0)                 # long before the kept history: holds the oldest kept
    np.testing.assert_allclose(window.energy, float(n - timeline.capacity))
    assert timeline.window(1).energy[0] == pytest.approx(n - 1)

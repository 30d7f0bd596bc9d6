"""Real MediaPipe on a real face: the astronaut demo clip, warped in known ways.

A short clip (6 s at 15 fps) goes through the real Tracker once per module; each test
then checks that the features move the way the warps of `testing.face_video` say.
"""
import numpy as np
import pytest

from expotion_live.testing import face_video as demo
from expotion_live.capture.sources import VideoFileSource
from expotion_live.features.face import EXPRESSION_SCALE
from expotion_live.features.schema import EXPRESSION_NAMES, FLOW_SHAPE, GEOMETRY_DIM, UPPER_BODY
from expotion_live.features.tracker import Tracker
from expotion_live.settings import TrackingSettings

SECONDS, FPS = 6.0, 15.0
YAW, PITCH, ROLL = range(3)
MOUTH_HEIGHT = EXPRESSION_NAMES.index("mouth_height")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return demo.make_face_video(tmp_path_factory.mktemp("demo") / "face.mp4", seconds=SECONDS, fps=FPS)


@pytest.fixture(scope="module")
def tracked(clip):
    """Every frame of the clip through one Tracker: (times, frames)."""
    source = VideoFileSource(clip, realtime=False, start_time=0.0)
    frames = []
    with Tracker(TrackingSettings()) as tracker:
        while (captured := source.read()) is not None:
            frames.append(tracker.process(captured.image_bgr, captured.t))
    source.close()
    return np.array([f.t for f in frames]), frames


def _in(times, name):
    start, end = demo.segment(name, SECONDS)
    return (times >= start) & (times < end)


def _truth(times, attribute):
    return np.array([getattr(demo.motion_at(t, SECONDS), attribute) for t in times])


def _lagged_correlation(measured, truth, max_lag=2):
    """Best correlation with the truth delayed by 0..max_lag frames (the One-Euro filter lags a little)."""
    n = len(measured)
    return max(np.corrcoef(measured[lag:], truth[:n - lag])[0, 1] for lag in range(max_lag + 1))


def test_mediapipe_finds_face_and_body_in_most_frames(tracked):
    times, frames = tracked
    assert len(frames) == round(SECONDS * FPS)
    assert np.mean([f.face_found for f in frames]) > 0.95
    assert np.mean([f.pose_found for f in frames]) > 0.9
    found = [f for f in frames if f.face_found]
    assert found[0].landmarks.shape == (478, 3)                 # refined mesh: iris included
    assert min(f.face_confidence for f in found) > 0.9


def test_features_stay_in_their_documented_ranges(tracked):
    _, frames = tracked
    expression = np.array([f.expression for f in frames])
    assert expression.min() >= 0.0 and expression.max() <= 1.0
    assert np.all(np.abs([f.head for f in frames]) < np.pi)
    energy = np.array([f.motion_energy for f in frames])
    assert energy.min() >= 0.0 and energy.max() <= 1.0
    assert all(f.flow.shape == FLOW_SHAPE and f.pose.shape == (len(UPPER_BODY), 4) for f in frames)
    assert all(np.isfinite(f.face_vector()).all() and np.isfinite(f.motion_vector()).all() for f in frames)


def test_a_turn_moves_yaw_with_the_warp_and_barely_pitch(tracked):
    times, frames = tracked
    head = np.array([f.head for f in frames])
    turn = _in(times, "turn")
    assert np.ptp(head[turn, YAW]) > 0.3
    assert np.ptp(head[turn, YAW]) > 4 * np.ptp(head[turn, PITCH])
    # Same direction as the warp: the head turns to the performer's left first (yaw > 0).
    assert np.corrcoef(head[turn, YAW], _truth(times[turn], "yaw"))[0, 1] > 0.8


def test_a_nod_moves_pitch_with_the_warp_and_barely_yaw(tracked):
    times, frames = tracked
    head = np.array([f.head for f in frames])
    nod = _in(times, "nod")
    assert np.ptp(head[nod, PITCH]) > 0.15
    assert np.ptp(head[nod, PITCH]) > 2 * np.ptp(head[nod, YAW])
    assert np.corrcoef(head[nod, PITCH], _truth(times[nod], "pitch"))[0, 1] > 0.8


def test_opening_the_mouth_moves_mouth_height(tracked):
    times, frames = tracked
    mouth_height = np.array([f.expression[MOUTH_HEIGHT] for f in frames])
    mouth, neutral = _in(times, "mouth"), _in(times, "neutral")
    assert mouth_height[mouth].max() > mouth_height[neutral].mean() + 0.2
    assert _lagged_correlation(mouth_height[mouth], _truth(times[mouth], "mouth")) > 0.8


def test_swaying_moves_motion_energy_roll_and_shoulders(tracked):
    times, frames = tracked
    energy = np.array([f.motion_energy for f in frames])
    sway, neutral = _in(times, "sway"), _in(times, "neutral")
    assert energy[sway].mean() > 0.3
    assert energy[neutral].mean() < 0.05
    shoulders_x = np.array([f.pose[1:3, 0].mean() for f in frames])
    assert np.ptp(shoulders_x[sway]) > 4 * np.ptp(shoulders_x[neutral]) + 0.01
    head = np.array([f.head for f in frames])
    assert np.ptp(head[sway, ROLL]) > 0.04
    # The flow field points the way the picture slides.
    flow_dx = np.array([f.flow[0].mean() for f in frames])
    slide = np.gradient(_truth(times, "sway_x"))
    assert np.corrcoef(flow_dx[sway][1:], slide[sway][1:])[0, 1] > 0.9


def test_geometry_is_pose_invariant(tracked):
    # The turn moves the landmarks in the image a lot; the normalised geometry much less.
    times, frames = tracked
    turn = _in(times, "turn") & np.array([f.face_found for f in frames])
    image_xy = np.array([f.landmarks[:, :2].reshape(-1) for f, keep in zip(frames, turn) if keep])
    geometry = np.array([f.geometry for f, keep in zip(frames, turn) if keep])
    image_spread = np.ptp(image_xy, axis=0).mean() / np.abs(image_xy).mean()
    geometry_spread = np.ptp(geometry, axis=0).mean() / np.abs(geometry).mean()
    assert geometry.shape[1] == GEOMETRY_DIM
    assert geometry_spread < image_spread


def test_calibration_puts_the_neutral_face_at_the_neutral_values(clip):
    source = VideoFileSource(clip, realtime=False, start_time=0.0)
    neutral_frames = [source.read() for _ in range(int(demo.segment("neutral", SECONDS)[1] * FPS))]
    source.close()
    with Tracker(TrackingSettings()) as tracker:
        tracker.calibrate(frames=5)
        for captured in neutral_frames[:5]:
            tracker.process(captured.image_bgr, captured.t)
        assert not tracker.calibrating and tracker.neutral is not None
        after = [tracker.process(c.image_bgr, c.t) for c in neutral_frames[5:]]
    expected = [EXPRESSION_SCALE[name].neutral for name in EXPRESSION_NAMES]
    np.testing.assert_allclose(after[-1].expression, expected, atol=0.05)
    np.testing.assert_allclose(after[-1].head, 0.0, atol=0.03)


def test_calibration_waits_for_a_face():
    with Tracker(TrackingSettings()) as tracker:
        tracker.calibrate(frames=2)
        tracker.process(np.full((240, 320, 3), 90, np.uint8), 0.0)
        assert tracker.calibrating and tracker.neutral is None

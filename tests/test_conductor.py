"""Conductor signals and the beat follower on hand landmark sequences in the tracking-recording format.

The sequences are what the hand tracker would record of the demo's conducting hand
(`testing.hand_video`: a V-shaped bounce to an ictus at known times), sampled at a camera's
30 fps with landmark jitter, saved and loaded as a recording, then run through the
Conductor. The same checks on real MediaPipe tracking of the rendered video are in
test_hands.py.
"""
import numpy as np
import pytest

from expotion_live.testing import hand_video as hand_demo
from expotion_live.features.conductor import Conductor, hand_shape, v_vertex
from expotion_live.features.recording import load_recording, save_recording
from expotion_live.features.schema import HAND_SIDES, HAND_SIGNAL_NAMES, FeatureFrame
from expotion_live.features.tempo import BeatFollower

FPS = 30.0
SIZE = (640, 480)
RIGHT, LEFT = HAND_SIDES.index("right"), HAND_SIDES.index("left")
OPENNESS = HAND_SIGNAL_NAMES.index("openness")


def hand_landmarks(palm_xy, performer_right: bool, curl: float = 0.0) -> np.ndarray:
    """(21, 3) image-normalised landmarks of the demo's drawn hand; `curl` 1 folds the fingers into a fist."""
    joints = hand_demo.hand_joints(palm_xy, SIZE, performer_right)               # (21, 2) pixels
    for base in (5, 9, 13, 17):                                                  # fingertips fold onto the palm
        fold_to = joints[0] + 0.5 * (joints[base] - joints[0])
        for k in (1, 2, 3):
            joints[base + k] += curl * (fold_to - joints[base + k])
    points = np.zeros((21, 3), np.float32)
    points[:, :2] = joints / np.array(SIZE)
    return points


def conducting_take(tmp_path, tempi, beats_each=8, jitter=0.002, seed=0):
    """The demo's conducting as a saved-and-loaded recording; returns (frames, true beat times)."""
    rng = np.random.default_rng(seed)
    beats = hand_demo.beat_times(tempi, beats_each)
    frames = []
    for i in range(round((beats[-1] + hand_demo.OUTRO) * FPS)):
        t = i / FPS + rng.uniform(-0.002, 0.002)                                 # camera timestamps wobble
        frame = FeatureFrame(t=t)
        palm = hand_demo.palm_at(t, beats)
        holding = hand_demo.holding_at(t, beats)
        for side, xy, is_right in ((RIGHT, palm, True), (LEFT, holding, False)):
            if xy[1] > 1.05:
                continue                                                         # out of the picture
            points = hand_landmarks(xy, is_right) + rng.normal(0, jitter, (21, 3)).astype(np.float32)
            frame.hands_found[side] = True
            frame.hand_confidence[side] = 0.95
            frame.hands[side] = points
            frame.palms[side] = points[[0, 5, 9, 13, 17], :2].mean(axis=0)
        frames.append(frame)
    path = save_recording(frames, tmp_path / "conducting.npz")
    return load_recording(path), beats


def conduct(frames):
    conductor = Conductor()
    return [conductor.update(frame) for frame in frames]


@pytest.mark.parametrize("tempi", [(60.0, 90.0), (90.0, 120.0), (120.0, 150.0), (150.0, 60.0)])
def test_beats_and_tempo_follow_the_conductor_through_a_tempo_change(tmp_path, tempi):
    frames, truth = conducting_take(tmp_path, tempi)
    frames = conduct(frames)
    found = np.array([f.t - f.beat_lag for f in frames if f.beat_confidence > 0])
    # Every ictus with a rebound after it (all but the last, where the hands drop) is found within 50 ms.
    errors = np.array([np.min(np.abs(found - b)) for b in truth[:-1]])
    assert errors.max() < 0.05, errors
    assert len(found) == len(truth) - 1                                          # and nothing else
    # Tempo within 2 BPM once four beats of each tempo were given.
    n = len(truth) // 2
    for bpm, fourth in ((tempi[0], truth[3]), (tempi[1], truth[n + 3])):
        after = [f for f in frames if fourth + 0.1 < f.t < fourth + 0.4]
        assert all(f.conducting for f in after)
        assert max(abs(f.conduct_bpm - bpm) for f in after) < 2.0, (bpm, [f.conduct_bpm for f in after])
    # The beat count is a phase that only moves forward, a whole beat per ictus.
    beats = np.array([f.conduct_beats for f in frames])
    assert np.all(np.diff(beats) >= 0)
    at_ictus = np.floor([f.conduct_beats for f in frames if f.beat_confidence > 0])
    np.testing.assert_array_equal(np.diff(at_ictus), 1.0)


def test_both_hands_dropping_is_a_cut_off(tmp_path):
    frames, truth = conducting_take(tmp_path, (120.0, 120.0), beats_each=4)
    frames = conduct(frames)
    cutoffs = [f.t for f in frames if f.cutoff]
    assert len(cutoffs) == 1 and truth[-1] < cutoffs[0] < truth[-1] + 1.0
    assert not any(f.conducting for f in frames if f.t >= cutoffs[0])
    assert all(f.conduct_bpm == 0.0 for f in frames if f.t >= cutoffs[0])


def test_a_held_fist_is_a_cut_off(tmp_path):
    frames, beats = conducting_take(tmp_path, (100.0, 100.0), beats_each=4)
    # The conducting hand stops at its top and closes into a fist, held still.
    stop = beats[5] + 0.3
    held = []
    for frame in frames:
        if frame.t > stop:
            for side, xy, is_right in ((RIGHT, (hand_demo.BEATING_X, 0.6), True),
                                       (LEFT, (hand_demo.HOLDING_X, hand_demo.HOLDING_Y), False)):
                points = hand_landmarks(xy, is_right, curl=1.0 if is_right else 0.0)
                frame.hands_found[side] = True
                frame.hands[side] = points
                frame.palms[side] = points[[0, 5, 9, 13, 17], :2].mean(axis=0)
        held.append(frame)
    frames = conduct(held)
    cutoffs = [f.t for f in frames if f.cutoff]
    assert len(cutoffs) == 1 and stop + 0.4 <= cutoffs[0] < stop + 1.6
    fist = [f for f in frames if f.t > stop + 1.0]
    assert all(f.hand_signals[RIGHT, OPENNESS] < 0.2 for f in fist)
    assert all(f.hand_signals[LEFT, OPENNESS] > 0.8 for f in fist)


def test_hand_shape_reads_openness_and_pinch():
    open_hand = hand_landmarks((0.5, 0.5), performer_right=True)
    fist = hand_landmarks((0.5, 0.5), performer_right=True, curl=1.0)
    pinching = open_hand.copy()
    pinching[4] = pinching[8]                                                    # thumb tip on index tip
    assert hand_shape(open_hand, 4 / 3)[0] > 0.9 and hand_shape(fist, 4 / 3)[0] < 0.1
    assert hand_shape(pinching, 4 / 3)[1] == 1.0 and hand_shape(open_hand, 4 / 3)[1] < 0.3


def test_v_vertex_places_the_apex_between_camera_frames():
    apex = 0.512
    times = np.array([0.4666, 0.5, 0.5333])
    heights = 0.8 - 1.5 * np.abs(times - apex)
    assert v_vertex(times, heights) == pytest.approx(apex, abs=1e-6)
    heights = 0.8 - 1.5 * np.abs(times - 0.49)
    assert v_vertex(times, heights) == pytest.approx(0.49, abs=1e-6)


def test_beat_follower_counts_a_missed_beat_and_restarts_after_a_pause():
    follower = BeatFollower()
    for t in (0.0, 0.5, 1.0, 1.5, 2.5):                                          # the ictus at 2.0 was missed
        follower.beat(t)
    assert follower.bpm == pytest.approx(120.0, abs=0.5)
    assert follower.beats_at(2.5) == pytest.approx(6.0)                           # 2.0 counted
    assert follower.conducting(3.5) and not follower.conducting(4.0)
    follower.beat(6.0)                                                            # after a long pause: no tempo yet
    assert follower.bpm == 0.0 and follower.beats_at(6.0) == pytest.approx(7.0)


def test_a_recording_from_before_hands_loads_with_no_hands(tmp_path):
    frames, _ = conducting_take(tmp_path, (120.0, 120.0), beats_each=2)
    path = save_recording(frames[:10], tmp_path / "v2.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    for name in ("hands_found", "hand_confidence", "hands", "palms", "hand_signals", "conducting", "leading_hand",
                 "beat_lag", "beat_confidence", "cutoff", "conduct_bpm", "conduct_beats"):
        del arrays[name]
    arrays["format"] = np.array("expotion-tracking/1")
    np.savez_compressed(tmp_path / "v1.npz", **arrays)
    old = load_recording(tmp_path / "v1.npz")
    assert len(old) == 10 and not any(f.hands_found.any() or f.conducting for f in old)
    assert old[0].hands.shape == frames[0].hands.shape

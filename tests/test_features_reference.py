"""The tracker on the Tasks landmarkers gives the features the mediapipe 0.10.21 solutions gave.

`data/tracking_reference_mediapipe_0.10.21.npz` is what the Tracker of commit 0bd725e
(`mp.solutions` FaceMesh with refine_landmarks, Pose full without smoothing, mediapipe
0.10.21, numpy 1.26) produced from every frame of `assets/demo_face.mp4`, before that path
was removed. Adaptors trained on those features must work on today's, so each feature is
held to a stated tolerance (measured differences: README, "Tracking models"):

- face landmarks (x, y, in pixels of the 640x480 clip): median 0.5, 95th percentile 1.5;
- expression scalars (0-1): mean 0.015, max 0.08, each correlated > 0.95 over the clip;
- head angles (radians): mean 0.005, max 0.03, each correlated > 0.95;
- pose-normalised geometry: mean 0.003, max 0.03;
- pose, the joints this clip shows (nose, shoulders; x, y image-normalised): mean 0.025,
  95th percentile 0.06 (looser: the shoulders sit on the clip's bottom edge, where the
  model is least sure). The other joints are out of the picture in both (visibility < 0.3),
  their positions guesses.
"""
from pathlib import Path

import numpy as np
import pytest

from expotion_live.capture.sources import VideoFileSource
from expotion_live.features.tracker import Tracker
from expotion_live.settings import TrackingSettings

REFERENCE = Path(__file__).parent / "data" / "tracking_reference_mediapipe_0.10.21.npz"
WIDTH, HEIGHT = 640, 480
SHOWN_JOINTS = slice(0, 3)          # rows of schema.UPPER_BODY: nose, left and right shoulder


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


@pytest.fixture(scope="module")
def tracked(face_video):
    """Today's features of every frame of the demo clip, as arrays named like the reference's."""
    source = VideoFileSource(face_video, realtime=False, start_time=0.0)
    frames = []
    with Tracker(TrackingSettings()) as tracker:
        while (captured := source.read()) is not None:
            frames.append(tracker.process(captured.image_bgr, captured.t))
    source.close()
    names = ("face_found", "landmarks", "geometry", "expression", "head", "pose_found", "pose")
    return {name: np.array([getattr(frame, name) for frame in frames]) for name in names}


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(a.shape[1])])


def test_the_same_frames_find_a_face_and_a_body(reference, tracked):
    assert len(tracked["face_found"]) == len(reference["face_found"])
    np.testing.assert_array_equal(tracked["face_found"], reference["face_found"])
    np.testing.assert_array_equal(tracked["pose_found"], reference["pose_found"])


def test_face_landmarks_match_within_a_pixel_or_two(reference, tracked):
    pixels = np.abs(tracked["landmarks"][..., :2] - reference["landmarks"][..., :2]) * (WIDTH, HEIGHT)
    assert tracked["landmarks"].shape[1:] == (478, 3)
    assert np.median(pixels) < 0.5
    assert np.percentile(pixels, 95) < 1.5
    irises = pixels[:, 468:]        # the attention mesh's refinement, rebuilt inside the bundle
    assert np.median(irises) < 0.5


def test_expression_scalars_and_head_angles_match(reference, tracked):
    for name, mean, worst in (("expression", 0.015, 0.08), ("head", 0.005, 0.03)):
        error = np.abs(tracked[name] - reference[name])
        assert error.mean() < mean, name
        assert error.max() < worst, name
        assert _correlations(tracked[name], reference[name]).min() > 0.95, name


def test_geometry_matches(reference, tracked):
    error = np.abs(tracked["geometry"] - reference["geometry"])
    assert error.mean() < 0.003
    assert error.max() < 0.03


def test_pose_of_the_shown_joints_matches(reference, tracked):
    error = np.abs(tracked["pose"][:, SHOWN_JOINTS, :2] - reference["pose"][:, SHOWN_JOINTS, :2])
    assert error.mean() < 0.025
    assert np.percentile(error, 95) < 0.06
    hidden_visibility = tracked["pose"][:, 3:, 3].mean(axis=0)
    assert (hidden_visibility < 0.3).all() and (reference["pose"][:, 3:, 3].mean(axis=0) < 0.3).all()

"""MediaPipe's landmarkers (the Tasks API) on the model bundles the project ships.

`assets/trackers/` holds the face mesh with attention (478 landmarks with irises), the
full pose model and the hand models of the mediapipe 0.10.21 wheel (Apache-2.0, LICENSE
beside them), repackaged for the Tasks API by `scripts/build_tracker_models.py`. Shipping
them keeps tracking offline on stage and on every Python that the Tasks releases install
on, and keeps the features the 0.10.21 solutions gave, which adaptors were trained on
(`tests/test_features_reference.py` holds the two to a tolerance).

Every landmarker runs in VIDEO mode: it follows the previous frame's landmarks and runs
its detector only when it has lost its target, so frames must come in time order.
"""
from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parents[2] / "assets" / "trackers"
FACE_MODEL = MODELS_DIR / "face_landmarker.task"
POSE_MODEL = MODELS_DIR / "pose_landmarker.task"
HAND_MODELS = {"lite": MODELS_DIR / "hand_landmarker_lite.task", "full": MODELS_DIR / "hand_landmarker_full.task"}


RESTORE = f"restore it: git checkout {MODELS_DIR}, or rebuild: python scripts/build_tracker_models.py"


class TrackerModelMissing(FileNotFoundError):
    """A model bundle is not on disk (they ship with the project, so the checkout is damaged)."""


def _options(path: Path):
    from mediapipe.tasks.python import BaseOptions, vision

    if not path.is_file():
        raise TrackerModelMissing(f"tracker model {path} is missing; {RESTORE}")
    return {"base_options": BaseOptions(model_asset_path=str(path)), "running_mode": vision.RunningMode.VIDEO}


def face_landmarker():
    """One face, 478 landmarks; detector and presence thresholds as 0.10.21's FaceMesh defaults."""
    from mediapipe.tasks.python import vision

    return vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        **_options(FACE_MODEL), num_faces=1, min_face_detection_confidence=0.5,
        min_face_presence_confidence=0.5, min_tracking_confidence=0.5))


def pose_landmarker():
    """One body, 33 landmarks, no segmentation mask."""
    from mediapipe.tasks.python import vision

    return vision.PoseLandmarker.create_from_options(vision.PoseLandmarkerOptions(
        **_options(POSE_MODEL), num_poses=1, output_segmentation_masks=False))


def hand_landmarker(model: str = "lite", num_hands: int = 2):
    """Up to `num_hands` hands, 21 landmarks each, with handedness."""
    from mediapipe.tasks.python import vision

    if model not in HAND_MODELS:
        raise ValueError(f"hand model must be one of {', '.join(HAND_MODELS)}, got {model!r}")
    return vision.HandLandmarker.create_from_options(vision.HandLandmarkerOptions(
        **_options(HAND_MODELS[model]), num_hands=num_hands, min_hand_detection_confidence=0.5,
        min_hand_presence_confidence=0.5, min_tracking_confidence=0.5))


def closed_with(owner, *tasks) -> weakref.finalize:
    """Close `tasks` when the returned finalizer is called or `owner` is collected, whichever first.

    A task left to its own `__del__` closes through a dispatcher thread of its own; when the
    task is collected inside a reference cycle that thread is collected with it, and close
    waits forever. The finalizer holds the tasks, so they are closed while it still runs.
    """
    return weakref.finalize(owner, _close, *tasks)


def _close(*tasks) -> None:
    for task in tasks:
        task.close()


class VideoClock:
    """Frame times (seconds) -> the strictly increasing milliseconds the landmarkers require.

    Counted from the first frame: the landmarkers' results depend on these whole
    milliseconds, so a live stream (monotonic clock) and the same file read offline
    (times from 0) must round alike to give the same features.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._last = -1

    def __call__(self, t: float) -> int:
        if self._start is None:
            self._start = t
        self._last = max(round((t - self._start) * 1000.0), self._last + 1)
        return self._last


def mp_image(rgb: np.ndarray):
    """An RGB uint8 array as the image type the landmarkers take (no copy when contiguous)."""
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))


def face_points(result) -> np.ndarray | None:
    """(478, 3) x, y image-normalised, z in units of the width; None when no face."""
    if not result.face_landmarks:
        return None
    return np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)


def pose_points(result) -> np.ndarray | None:
    """(33, 4) x, y image-normalised, z, visibility 0-1; None when no body."""
    if not result.pose_landmarks:
        return None
    return np.array([(p.x, p.y, p.z, p.visibility) for p in result.pose_landmarks[0]], dtype=np.float32)

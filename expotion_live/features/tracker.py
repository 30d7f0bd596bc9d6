"""One camera frame -> one `FeatureFrame`: MediaPipe face mesh and pose, DIS flow, One-Euro.

The same `Tracker.process` runs live (from `pipeline.TrackingThread`) and offline (from
`offline.extract_video`), so what the adaptor learns from is what it sees on stage.

Per frame: face mesh with iris (478 landmarks) -> head angles, pose-normalised geometry
and expression scalars (`face.py`); pose -> the upper-body landmarks of
`schema.UPPER_BODY`; DIS optical flow -> pooled field and motion energy (`flow.py`);
when `settings.hands` is on, both hands (`hands.py`) -> conductor signals, beats and
tempo (`conductor.py`).
Every signal except the flow field goes through a One-Euro filter stamped with the
frame's capture time; a face or body that is lost resets its filters, so nothing is
smoothed across a gap. Lost parts are zeros with `found = False`, never an error.

MediaPipe's landmarkers (`landmarkers.py`, the models the project ships) are loaded when
a Tracker is built, not when this module is imported.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from ..settings import TrackingSettings
from . import face, landmarkers
from .conductor import Conductor
from .flow import FlowTracker
from .hands import HandTracker
from .one_euro import OneEuroFilter
from .schema import UPPER_BODY, FeatureFrame

CALIBRATION_FRAMES = 15   # half a second of a 30 fps camera, averaged into the neutral face


class Tracker:
    """Stateful (filters, flow, MediaPipe's tracking): one instance per video stream, one thread."""

    def __init__(self, settings: TrackingSettings, neutral: face.Neutral | None = None):
        self.settings = settings
        self.neutral = neutral
        self._face_mesh = landmarkers.face_landmarker()
        self._pose = landmarkers.pose_landmarker()
        self._close_landmarkers = landmarkers.closed_with(self, self._face_mesh, self._pose)
        self._clock = landmarkers.VideoClock()
        self._flow = FlowTracker(settings.flow_width)
        params = (settings.min_cutoff, settings.beta, settings.d_cutoff)
        self._face_filters = {name: OneEuroFilter(*params) for name in ("geometry", "expression", "head")}
        self._pose_filter = OneEuroFilter(*params)
        self._energy_filter = OneEuroFilter(*params)
        self._hands = HandTracker(settings.hand_model, *params) if settings.hands else None
        self._conductor = Conductor(*params) if settings.hands else None
        self._calibration_lock = threading.Lock()
        self._calibration: list[tuple[np.ndarray, np.ndarray]] | None = None

    def calibrate(self, frames: int = CALIBRATION_FRAMES) -> None:
        """Take the next `frames` frames with a face as the performer's neutral face.

        Safe to call from another thread (the UI); the tracking thread does the work.
        """
        with self._calibration_lock:
            self._calibration = []
            self._calibration_target = frames

    @property
    def calibrating(self) -> bool:
        return self._calibration is not None

    def process(self, image_bgr: np.ndarray, t: float) -> FeatureFrame:
        """Track one BGR frame captured at `t` (seconds, increasing)."""
        height, width = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        image, ms = landmarkers.mp_image(rgb), self._clock(t)
        frame = FeatureFrame(t=t)
        self._track_face(frame, landmarkers.face_points(self._face_mesh.detect_for_video(image, ms)), width, height)
        self._track_pose(frame, landmarkers.pose_points(self._pose.detect_for_video(image, ms)))
        flow, energy = self._flow.process(image_bgr, t)
        frame.flow = flow
        frame.motion_energy = float(np.clip(self._energy_filter(np.array([energy]), t)[0], 0.0, 1.0))
        if self._hands is not None:
            self._hands.process(image, ms, frame)
            self._conductor.update(frame, aspect=width / height)
        return frame

    def _track_face(self, frame: FeatureFrame, landmarks: np.ndarray | None, width: int, height: int) -> None:
        if landmarks is None:
            for smoother in self._face_filters.values():
                smoother.reset()
            return
        points = face.to_isotropic(landmarks, width, height)
        rotation = face.head_frame(points)
        shape = face.normalised_shape(points, rotation)
        head = face.head_angles(rotation)
        raw = face.raw_expression(shape)
        self._collect_calibration(raw, head)
        if self.neutral is not None:
            head = head - self.neutral.head
        t = frame.t
        frame.face_found = True
        # The face landmarker reports no face score: use how much of the
        # mesh lies inside the picture (a face half out of frame is tracked poorly).
        inside = (landmarks[:, 0] >= 0) & (landmarks[:, 0] <= 1) & (landmarks[:, 1] >= 0) & (landmarks[:, 1] <= 1)
        frame.face_confidence = float(inside.mean())
        frame.landmarks = landmarks
        frame.geometry = self._face_filters["geometry"](face.geometry_vector(shape), t)
        frame.expression = np.clip(
            self._face_filters["expression"](face.expression_scalars(raw, self.neutral), t), 0.0, 1.0)
        frame.head = self._face_filters["head"](head, t)

    def _collect_calibration(self, raw: np.ndarray, head: np.ndarray) -> None:
        with self._calibration_lock:
            if self._calibration is None:
                return
            self._calibration.append((raw, head))
            if len(self._calibration) >= self._calibration_target:
                raws, heads = zip(*self._calibration)
                self.neutral = face.Neutral(np.mean(raws, axis=0), np.mean(heads, axis=0))
                self._calibration = None

    def _track_pose(self, frame: FeatureFrame, landmarks: np.ndarray | None) -> None:
        if landmarks is None:
            self._pose_filter.reset()
            return
        pose = landmarks[list(UPPER_BODY)]                                           # (len(UPPER_BODY), 4)
        frame.pose_found = True
        frame.pose_confidence = float(np.mean(pose[1:3, 3]))                         # the shoulders' visibility
        frame.pose = self._pose_filter(pose, frame.t)

    def close(self) -> None:
        self._close_landmarkers()
        if self._hands is not None:
            self._hands.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

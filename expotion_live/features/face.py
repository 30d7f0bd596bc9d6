"""Face-mesh landmarks -> head orientation, pose-invariant geometry and expression scalars.

Input: MediaPipe's 478 landmarks, x and y normalised to the image width and height,
z in units of the width (smaller = nearer the camera). Everything here is plain numpy
so the same code serves the live tracker, offline extraction and the tests.

Head frame: x runs from the right eye's outer corner to the left eye's (the
performer's left, image right), y from the forehead to the chin, z = x cross y (into
the head). Removing the frame's translation (centroid), rotation and scale
(eye-corner distance) leaves a shape that changes with expression only.

Expression scalars are FaceOSC-style raw ratios mapped to 0-1 by `EXPRESSION_SCALE`:
each raw ratio is measured in the head frame in units of the eye-corner distance.
Calibration records the performer's neutral raw ratios; afterwards their neutral face
maps to each scalar's `neutral` value whatever their face shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .schema import EXPRESSION_NAMES, GEOMETRY_LANDMARKS

# Landmark indices (MediaPipe face mesh; "left" = the performer's left = image right).
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
RIGHT_EYE_TOP, RIGHT_EYE_BOTTOM, LEFT_EYE_TOP, LEFT_EYE_BOTTOM = 159, 145, 386, 374
RIGHT_BROW, LEFT_BROW = 105, 334
MOUTH_RIGHT, MOUTH_LEFT, LIP_INNER_TOP, LIP_INNER_BOTTOM = 61, 291, 13, 14
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1


@dataclass(frozen=True)
class Scale:
    """Maps a raw ratio to 0-1: `zero` -> 0, `one` -> 1 (clipped); a neutral face sits at `neutral`."""

    zero: float
    one: float
    neutral: float

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return np.clip((raw - self.zero) / (self.one - self.zero), 0.0, 1.0)


# Raw ratio ranges, in eye-corner distances. Set from MediaPipe meshes of the astronaut clip
# (a smiling face, so her rest sits mid-range on smile and mouth width) and typical faces;
# calibration moves each scale to the performer, so only the span (one - zero) is fixed.
EXPRESSION_SCALE = {
    "mouth_width": Scale(0.50, 0.90, 0.35),    # lip corner to corner; 1 = wide grin
    "mouth_height": Scale(0.02, 0.50, 0.0),    # inner lips apart; 0 = closed, 1 = wide open
    "smile": Scale(-0.05, 0.15, 0.25),         # lip corners above the lip centre
    "brow_left": Scale(0.10, 0.35, 0.4),       # brow above the upper eyelid; 1 = raised
    "brow_right": Scale(0.10, 0.35, 0.4),
    "eye_left": Scale(0.05, 0.50, 0.6),        # eyelid opening over eye width; 0 = shut
    "eye_right": Scale(0.05, 0.50, 0.6),
    "jaw": Scale(0.85, 1.25, 0.0),             # nose tip to chin; 1 = jaw dropped
}
assert tuple(EXPRESSION_SCALE) == EXPRESSION_NAMES


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def to_isotropic(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """(478, 3) normalised landmarks -> pixels on all three axes, so angles are true angles."""
    return landmarks * np.array([width, height, width], dtype=np.float64)


def head_frame(points: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are the head's x, y, z axes in camera coordinates."""
    ex = _unit(points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER])
    down = points[CHIN] - points[FOREHEAD]
    ey = _unit(down - ex * float(down @ ex))
    ez = np.cross(ex, ey)
    return np.stack([ex, ey, ez], axis=1)


def head_angles(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in radians from a head frame.

    yaw + = turned to the performer's left, pitch + = nodded up, roll + = tilted toward
    the performer's left shoulder. The camera looks along +z; the face looks along -z
    of the head frame, so a frontal face has ez = (0, 0, 1).
    """
    ex, ez = rotation[:, 0], rotation[:, 2]
    yaw = math.atan2(-ez[0], ez[2])
    pitch = math.asin(float(np.clip(ez[1], -1.0, 1.0)))
    roll = math.atan2(ex[1], ex[0])
    return np.array([yaw, pitch, roll], dtype=np.float32)


def normalised_shape(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks in the head frame: centroid at 0, eye-corner distance 1."""
    centred = points - points.mean(axis=0)
    in_head = centred @ rotation                                # (478, 3) coordinates along ex, ey, ez
    scale = float(np.linalg.norm(points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]))
    return in_head / max(scale, 1e-9)


def geometry_vector(shape: np.ndarray) -> np.ndarray:
    """(GEOMETRY_DIM,) the sparse landmark set of the pose-normalised shape, flattened."""
    return shape[list(GEOMETRY_LANDMARKS)].reshape(-1).astype(np.float32)


def raw_expression(shape: np.ndarray) -> np.ndarray:
    """(len(EXPRESSION_NAMES),) raw ratios from a pose-normalised shape (y runs down the face)."""
    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(shape[a] - shape[b]))

    lip_centre_y = 0.5 * (shape[LIP_INNER_TOP, 1] + shape[LIP_INNER_BOTTOM, 1])
    corners_y = 0.5 * (shape[MOUTH_RIGHT, 1] + shape[MOUTH_LEFT, 1])
    return np.array([
        dist(MOUTH_RIGHT, MOUTH_LEFT),
        dist(LIP_INNER_TOP, LIP_INNER_BOTTOM),
        lip_centre_y - corners_y,
        shape[LEFT_EYE_TOP, 1] - shape[LEFT_BROW, 1],
        shape[RIGHT_EYE_TOP, 1] - shape[RIGHT_BROW, 1],
        dist(LEFT_EYE_TOP, LEFT_EYE_BOTTOM) / max(dist(LEFT_EYE_INNER, LEFT_EYE_OUTER), 1e-9),
        dist(RIGHT_EYE_TOP, RIGHT_EYE_BOTTOM) / max(dist(RIGHT_EYE_INNER, RIGHT_EYE_OUTER), 1e-9),
        dist(NOSE_TIP, CHIN),
    ])


@dataclass(frozen=True)
class Neutral:
    """A performer's neutral face: raw expression ratios and head angles (camera off-axis)."""

    raw_expression: np.ndarray   # (len(EXPRESSION_NAMES),)
    head: np.ndarray             # (3,) radians


def expression_scalars(raw: np.ndarray, neutral: Neutral | None) -> np.ndarray:
    """Raw ratios -> 0-1 scalars; with a neutral face, its ratios land on each scale's `neutral`."""
    out = np.empty(len(EXPRESSION_NAMES), dtype=np.float32)
    for i, name in enumerate(EXPRESSION_NAMES):
        scale = EXPRESSION_SCALE[name]
        value = raw[i]
        if neutral is not None:
            neutral_raw = scale.zero + scale.neutral * (scale.one - scale.zero)
            value = value - neutral.raw_expression[i] + neutral_raw
        out[i] = scale.apply(value)
    return out

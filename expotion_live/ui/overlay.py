"""What the performer sees over their camera image: face mesh, pose skeleton, hands, optical flow.

Plain OpenCV on a BGR array, no Qt, so the live window and `export` draw the very same
picture. Features are never mirrored; `mirror=True` flips the finished picture only,
so the drawing stays on the face.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from ..features.flow import REFERENCE_WIDTH
from ..features.schema import FLOW_SHAPE, HAND_SIDES, UPPER_BODY, FeatureFrame

MESH_COLOUR = (120, 230, 120)       # BGR: thin green tessellation
MESH_OPACITY = 0.35                 # blended so the face under the mesh stays readable
CONTOUR_COLOUR = (80, 255, 255)     # yellow: lips, eyes, brows, face oval
POSE_COLOUR = (255, 160, 60)        # blue-ish skeleton
FLOW_COLOUR = (60, 60, 255)         # red motion arrows
FLOW_GAIN = 4.0                     # arrows drawn this many frames long, so slow moves are visible
FLOW_MIN_PIXELS = 0.4               # ignore sub-pixel flow (sensor noise)
POSE_MIN_VISIBILITY = 0.5
HAND_COLOURS = {"left": (255, 120, 255), "right": (60, 200, 255)}   # BGR: magenta / orange, the performer's sides
BEAT_COLOUR = (255, 255, 255)       # a ring around the palm in the frame that recognised a beat

# Upper-body bones as MediaPipe pose indices; drawn between rows of `FeatureFrame.pose`.
_BONES_MP = ((11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24))
BONES = tuple((UPPER_BODY.index(a), UPPER_BODY.index(b)) for a, b in _BONES_MP)


@functools.cache
def _mesh_edges() -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) landmark index pairs for the tessellation and for the contours (from MediaPipe)."""
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections as mesh

    def as_array(*connections) -> np.ndarray:
        return np.array(sorted({(c.start, c.end) for edges in connections for c in edges}), np.int32)

    return as_array(mesh.FACE_LANDMARKS_TESSELATION), as_array(
        mesh.FACE_LANDMARKS_CONTOURS, mesh.FACE_LANDMARKS_LEFT_IRIS, mesh.FACE_LANDMARKS_RIGHT_IRIS)


@functools.cache
def _hand_edges() -> np.ndarray:
    """(E, 2) hand landmark index pairs (from MediaPipe)."""
    from mediapipe.tasks.python.vision.hand_landmarker import HandLandmarksConnections as hand

    return np.array(sorted((c.start, c.end) for c in hand.HAND_CONNECTIONS), np.int32)


def _segments(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(E, 2, 2) int32 pixel segments for cv2.polylines."""
    return np.stack([points[edges[:, 0]], points[edges[:, 1]]], axis=1).astype(np.int32)


def draw_face(image: np.ndarray, landmarks: np.ndarray) -> None:
    """The tessellation blended in lightly (the face stays visible), the contours on top."""
    height, width = image.shape[:2]
    points = landmarks[:, :2] * (width, height)                      # (478, 2) pixels
    tessellation, contours = _mesh_edges()
    mesh = image.copy()
    cv2.polylines(mesh, list(_segments(points, tessellation)), False, MESH_COLOUR, 1, cv2.LINE_AA)
    cv2.addWeighted(mesh, MESH_OPACITY, image, 1.0 - MESH_OPACITY, 0.0, dst=image)
    cv2.polylines(image, list(_segments(points, contours)), False, CONTOUR_COLOUR, 1, cv2.LINE_AA)


def draw_pose(image: np.ndarray, pose: np.ndarray) -> None:
    """Bones between visible joints; pose rows are (x, y, z, visibility), x and y 0-1."""
    height, width = image.shape[:2]
    visible = pose[:, 3] >= POSE_MIN_VISIBILITY
    points = (pose[:, :2] * (width, height)).astype(np.int32)
    for a, b in BONES:
        if visible[a] and visible[b]:
            cv2.line(image, tuple(points[a]), tuple(points[b]), POSE_COLOUR, 3, cv2.LINE_AA)
    shoulders = UPPER_BODY.index(11), UPPER_BODY.index(12)
    nose = UPPER_BODY.index(0)
    if visible[nose] and visible[shoulders[0]] and visible[shoulders[1]]:
        neck = (points[shoulders[0]] + points[shoulders[1]]) // 2
        cv2.line(image, tuple(points[nose]), tuple(neck), POSE_COLOUR, 3, cv2.LINE_AA)
    for point, seen in zip(points, visible):
        if seen:
            cv2.circle(image, tuple(point), 5, POSE_COLOUR, -1, cv2.LINE_AA)


def draw_hands(image: np.ndarray, frame: FeatureFrame) -> None:
    """Each found hand's bones and joints in its side's colour; a ring at the palm on a beat."""
    height, width = image.shape[:2]
    for side, name in enumerate(HAND_SIDES):
        if not frame.hands_found[side]:
            continue
        points = frame.hands[side, :, :2] * (width, height)                      # (21, 2) pixels
        colour = HAND_COLOURS[name]
        cv2.polylines(image, list(_segments(points, _hand_edges())), False, colour, 2, cv2.LINE_AA)
        for x, y in points.astype(np.int32):
            cv2.circle(image, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
    if frame.beat_confidence > 0 and frame.leading_hand >= 0:
        x, y = (frame.palms[frame.leading_hand] * (width, height)).astype(np.int32)
        cv2.circle(image, (int(x), int(y)), int(0.08 * height), BEAT_COLOUR, 3, cv2.LINE_AA)


def draw_flow(image: np.ndarray, flow: np.ndarray) -> None:
    """One arrow per cell of the coarse flow grid where something moves."""
    height, width = image.shape[:2]
    _, rows, cols = FLOW_SHAPE
    dx, dy = flow                                                      # (rows, cols) each
    scale = width / REFERENCE_WIDTH   # flow vectors are in pixels of a frame this wide
    moving = np.hypot(dx, dy) >= FLOW_MIN_PIXELS
    for i, j in zip(*np.nonzero(moving)):
        x0, y0 = (j + 0.5) * width / cols, (i + 0.5) * height / rows
        x1, y1 = x0 + dx[i, j] * scale * FLOW_GAIN, y0 + dy[i, j] * scale * FLOW_GAIN
        cv2.arrowedLine(image, (int(x0), int(y0)), (int(x1), int(y1)), FLOW_COLOUR, 1, cv2.LINE_AA,
                        tipLength=0.3)


def draw_overlay(image_bgr: np.ndarray, frame: FeatureFrame | None, mirror: bool = False) -> np.ndarray:
    """A new BGR image: the camera picture with flow, pose, face mesh and hands drawn over it."""
    out = image_bgr.copy()
    if frame is not None:
        draw_flow(out, frame.flow)
        if frame.pose_found:
            draw_pose(out, frame.pose)
        if frame.face_found and frame.landmarks is not None:
            draw_face(out, frame.landmarks)
        draw_hands(out, frame)
    return cv2.flip(out, 1) if mirror else out

"""The overlay drawn on a real face video frame tracked by the real tracker."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from expotion_live.features.schema import UPPER_BODY
from expotion_live.settings import Settings
from expotion_live.ui.overlay import CONTOUR_COLOUR, FLOW_COLOUR, POSE_COLOUR, draw_overlay


@pytest.fixture(scope="module")
def tracked(face_video):
    """(image, FeatureFrame) 1.5 s into the demo video, tracked from the start like the live path."""
    from expotion_live.features.tracker import Tracker

    capture = cv2.VideoCapture(str(face_video))
    with Tracker(Settings().tracking) as tracker:
        for i in range(45):
            ok, image = capture.read()
            assert ok
            frame = tracker.process(image, i / 30)
    assert frame.face_found and frame.pose_found
    return image, frame


def colour_mask(image, colour, tolerance=40):
    return np.all(np.abs(image.astype(int) - colour) < tolerance, axis=2)


def test_overlay_draws_mesh_on_the_face_and_the_skeleton_on_the_body(tracked):
    image, frame = tracked
    drawn = draw_overlay(image, frame)
    assert drawn.shape == image.shape and not np.shares_memory(drawn, image)
    height, width = image.shape[:2]
    x0, y0 = (frame.landmarks[:, :2].min(axis=0) * (width, height)).astype(int)
    x1, y1 = (frame.landmarks[:, :2].max(axis=0) * (width, height)).astype(int)
    contours = colour_mask(drawn, CONTOUR_COLOUR) & ~colour_mask(image, CONTOUR_COLOUR)
    ys, xs = np.nonzero(contours)
    assert len(xs) > 300
    inside = (xs >= x0 - 2) & (xs <= x1 + 2) & (ys >= y0 - 2) & (ys <= y1 + 2)
    assert inside.mean() > 0.98                      # the mesh sits on the tracked face
    shoulders = frame.pose[[UPPER_BODY.index(11), UPPER_BODY.index(12)], :2] * (width, height)
    middle = shoulders.mean(axis=0).astype(int)     # a bone runs between the shoulders
    patch = colour_mask(drawn, POSE_COLOUR)[middle[1] - 4:middle[1] + 5, middle[0] - 4:middle[0] + 5]
    assert patch.any()


def test_flow_arrows_follow_motion(tracked):
    image, frame = tracked
    still = frame.__class__(t=frame.t)               # nothing found, no motion: the picture is untouched
    np.testing.assert_array_equal(draw_overlay(image, still), image)
    moving = frame.__class__(t=frame.t, flow=np.zeros_like(frame.flow))
    moving.flow[0, 10:14, 10:14] = 3.0               # a patch moving right
    arrows = colour_mask(draw_overlay(image, moving), FLOW_COLOUR) & ~colour_mask(image, FLOW_COLOUR)
    ys, xs = np.nonzero(arrows)
    assert len(xs) > 20 and 180 <= xs.mean() <= 300 and 180 <= ys.mean() <= 300


def test_mirror_flips_the_picture_not_the_features(tracked):
    image, frame = tracked
    np.testing.assert_array_equal(draw_overlay(image, frame, mirror=True), cv2.flip(draw_overlay(image, frame), 1))

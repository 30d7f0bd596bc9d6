"""Both hands from one camera frame: MediaPipe's hand landmarker (21 landmarks each), left/right as the performer sees them.

The hand models (a palm detector, and a landmark model that follows each hand from
frame to frame) are the mediapipe 0.10.21 wheel's, shipped in `assets/trackers`
(`landmarkers.hand_landmarker`). While hands are tracked the landmarker follows them;
while none is, it is run on every SEARCH_EVERY-th frame only, so an empty picture costs
a fraction of a palm detection per frame and a hand that enters is found within a few
frames.

Sides: the landmarker names each hand's handedness as seen in the picture it is given
(our frames are never mirrored); the lite model often names both hands alike. So with two
hands in the picture, the one further to the image's left is the performer's right hand
(they face the camera); a single hand keeps the side of the hand nearest to it in the
previous frame, and only a hand that appears alone takes the landmarker's name.

Landmarks are One-Euro smoothed per hand (a hand that is lost resets its filter); the
palm centre is also kept unsmoothed, for timing the beat (`conductor.py`).
"""
from __future__ import annotations

import numpy as np

from . import landmarkers
from .conductor import palm_centre
from .one_euro import OneEuroFilter
from .schema import HAND_SIDES, FeatureFrame

SEARCH_EVERY = 3            # frames between palm-detector runs while no hand is tracked


class HandTracker:
    """Stateful (MediaPipe's tracking, filters): one per video stream, on the tracking thread."""

    def __init__(self, model: str = "lite", min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        self._hands = landmarkers.hand_landmarker(model, num_hands=len(HAND_SIDES))
        self._filters = [OneEuroFilter(min_cutoff, beta, d_cutoff) for _ in HAND_SIDES]
        self._idle = 0              # frames since the detector last looked, while no hand is tracked
        self._tracking = False      # a hand was found in the previous frame
        self._last_palms: dict[int, np.ndarray] = {}     # side -> palm centre in the previous frame

    def process(self, image, ms: int, frame: FeatureFrame) -> None:
        """Fill `frame`'s hand fields from a picture (`landmarkers.mp_image`) at `ms` (increasing)."""
        if not self._tracking and self._idle < SEARCH_EVERY - 1:
            self._idle += 1
            return                  # the frame's hands stay "not found"
        self._idle = 0
        found = np.zeros(len(HAND_SIDES), bool)
        for side, landmarks, score in self._sides(self._hands.detect_for_video(image, ms)):
            found[side] = True
            frame.hand_confidence[side] = score
            frame.palms[side] = palm_centre(landmarks)
            frame.hands[side] = self._filters[side](landmarks, frame.t)
        for side in np.flatnonzero(~found):
            self._filters[side].reset()
        frame.hands_found[:] = found
        self._tracking = bool(found.any())

    def _sides(self, result) -> list[tuple[int, np.ndarray, float]]:
        """(performer side, (21, 3) landmarks, handedness score for that side) per detected hand."""
        hands = []
        for landmarks, handedness in zip(result.hand_landmarks, result.handedness):
            points = np.array([(p.x, p.y, p.z) for p in landmarks], np.float32)              # (21, 3)
            label = handedness[0]
            named = HAND_SIDES.index(label.category_name.lower())
            hands.append((named, points, float(label.score)))
        if len(hands) == 2:
            by_x = sorted(hands, key=lambda hand: float(hand[1][:, 0].mean()))
            sides = [HAND_SIDES.index("right"), HAND_SIDES.index("left")]
        elif len(hands) == 1 and self._last_palms:
            palm = palm_centre(hands[0][1])
            by_x = hands
            sides = [min(self._last_palms, key=lambda side: np.linalg.norm(self._last_palms[side] - palm))]
        else:
            by_x, sides = hands, [named for named, _, _ in hands]
        placed = [(side, points, score if side == named else 1.0 - score)
                  for side, (named, points, score) in zip(sides, by_x)]
        self._last_palms = {side: palm_centre(points) for side, points, _ in placed}
        return placed

    def close(self) -> None:
        self._hands.close()

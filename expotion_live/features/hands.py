"""Both hands from one camera frame: 21 landmarks each, left/right as the performer sees them.

The hand models (a palm detector, and a landmark model that follows each hand from
frame to frame) are the mediapipe 0.10.21 wheel's, shipped in `assets/trackers`
(`landmarkers.hand_landmarker`). The palm detector is the costly part, so it runs only
when needed: two tracked hands are followed by the landmark model alone, one tracked hand
by a one-hand landmarker, and the search for a (second) hand runs on every SEARCH_EVERY-th
frame; an empty picture costs a third of a palm detection per frame, and a hand that
enters is found within a few frames.

Sides: the landmarker names each hand's handedness as seen in the picture it is given
(our frames are never mirrored); the lite model often names both hands alike. So with two
hands in the picture, the one further to the image's left is the performer's right hand
(they face the camera); a single hand keeps the side of the hand nearest to it in the
previous frame (or lost less than SIDE_MEMORY ago), and a hand that appears alone takes the
landmarker's name when it is sure, else the side of the picture it is on.

Landmarks are One-Euro smoothed per hand (a hand that is lost resets its filter); the
palm centre is also kept unsmoothed, for timing the beat (`conductor.py`).
"""
from __future__ import annotations

import numpy as np

from . import landmarkers
from .conductor import palm_centre
from .one_euro import OneEuroFilter
from .schema import HAND_SIDES, FeatureFrame

SEARCH_EVERY = 3            # frames between palm-detector runs while fewer than two hands are tracked
SIDE_MEMORY = 0.5           # seconds a lost hand's side is remembered, for a hand found again near it
NAME_TRUST = 0.8            # handedness score from which a lone new hand takes the landmarker's name


def _named_hands(result) -> list[tuple[int, np.ndarray, float]]:
    """(side the landmarker named, (21, 3) landmarks, its score) per hand of a landmarker result."""
    return [(HAND_SIDES.index(handedness[0].category_name.lower()),
             np.array([(p.x, p.y, p.z) for p in landmarks], np.float32), float(handedness[0].score))
            for landmarks, handedness in zip(result.hand_landmarks, result.handedness)]


def _same_hand(a: np.ndarray, b: np.ndarray) -> bool:
    """Two detections of one hand: palms closer than half the longer palm length (wrist to middle knuckle).

    The two-hand landmarker can report a hand twice when it finds it again away from
    where it last followed it (it runs on search frames only while one hand is tracked).
    """
    palm_length = max(float(np.linalg.norm(points[9, :2] - points[0, :2])) for points in (a, b))
    return float(np.linalg.norm(palm_centre(a) - palm_centre(b))) < 0.5 * palm_length


class HandTracker:
    """Stateful (MediaPipe's tracking, filters): one per video stream, on the tracking thread."""

    def __init__(self, model: str = "lite", min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        # A landmarker for two hands runs its palm detector on every frame while it tracks
        # fewer than two; so a single hand is followed by a one-hand landmarker, and the
        # two-hand one looks for the other hand on every SEARCH_EVERY-th frame only (or
        # when the one hand slips).
        self._pair = landmarkers.hand_landmarker(model, num_hands=len(HAND_SIDES))
        self._single = landmarkers.hand_landmarker(model, num_hands=1)
        self._close_landmarkers = landmarkers.closed_with(self, self._pair, self._single)
        self._filters = [OneEuroFilter(min_cutoff, beta, d_cutoff) for _ in HAND_SIDES]
        self._since_search = 0      # frames since the two-hand landmarker last ran
        self._tracked = 0           # hands found in the previous frame
        self._palms: dict[int, np.ndarray] = {}     # side -> palm centre where each hand was last seen
        self._palms_t = -np.inf     # when they were seen

    def process(self, image, ms: int, frame: FeatureFrame) -> None:
        """Fill `frame`'s hand fields from a picture (`landmarkers.mp_image`) at `ms` (increasing)."""
        search = self._since_search >= SEARCH_EVERY - 1
        self._since_search = 0 if search else self._since_search + 1
        hands: list[tuple[int, np.ndarray, float]] = []
        if self._tracked == 1:                  # follow it on every frame; look for the other now and then
            hands = _named_hands(self._single.detect_for_video(image, ms))
            if search or not hands:
                both = _named_hands(self._pair.detect_for_video(image, ms))
                if not hands or (len(both) == 2 and not _same_hand(both[0][1], both[1][1])):
                    hands = both
        elif self._tracked == 2 or search:
            hands = _named_hands(self._pair.detect_for_video(image, ms))
        found = np.zeros(len(HAND_SIDES), bool)
        for side, landmarks, score in self._sides(hands, frame.t):
            found[side] = True
            frame.hand_confidence[side] = score
            frame.palms[side] = palm_centre(landmarks)
            frame.hands[side] = self._filters[side](landmarks, frame.t)
        for side in np.flatnonzero(~found):
            self._filters[side].reset()
        frame.hands_found[:] = found
        self._tracked = int(found.sum())

    def _sides(self, hands: list[tuple[int, np.ndarray, float]], t: float) -> list[tuple[int, np.ndarray, float]]:
        """`_named_hands` -> (performer side, landmarks, handedness score for that side) per hand."""
        right, left = HAND_SIDES.index("right"), HAND_SIDES.index("left")
        if len(hands) == 2 and _same_hand(hands[0][1], hands[1][1]):
            hands = hands[:1]
        if len(hands) == 2:
            hands = sorted(hands, key=lambda hand: float(hand[1][:, 0].mean()))
            sides = [right, left]
        elif len(hands) == 1 and self._palms and t - self._palms_t <= SIDE_MEMORY:
            palm = palm_centre(hands[0][1])
            sides = [min(self._palms, key=lambda side: np.linalg.norm(self._palms[side] - palm))]
        elif len(hands) == 1:
            named, points, score = hands[0]
            sides = [named if score >= NAME_TRUST else (right if palm_centre(points)[0] < 0.5 else left)]
        else:
            return []
        placed = [(side, points, score if side == named else 1.0 - score)
                  for side, (named, points, score) in zip(sides, hands)]
        self._palms, self._palms_t = {side: palm_centre(points) for side, points, _ in placed}, t
        return placed

    def close(self) -> None:
        self._close_landmarkers()

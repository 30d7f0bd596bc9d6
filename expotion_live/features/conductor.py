"""Conductor gestures from tracked hands: height, stroke, openness, pinch, beats and cut-offs.

Reads the hands of each `FeatureFrame` (filled by `hands.HandTracker`, or replayed from a
recording) and writes the conductor fields of the same frame, so live tracking, playback
and tests on landmark sequences run the same code.

- Signals per hand, 0-1, One-Euro smoothed: height of the palm in the picture, stroke size
  (its vertical travel over the last STROKE_SECONDS), openness (fingertips' reach from
  the wrist against the knuckles'), pinch (thumb tip to index tip against the palm size).
- The leading hand is the one that travels most (the other must travel clearly more
  to take over); its ictus, the bottom of each down stroke, is a beat. The palm's raw
  height is followed down and up with a hysteresis of ICTUS_HYSTERESIS (tracking jitter
  makes no beats); a bottom after a descent of at least MIN_STROKE is an ictus, timed
  between camera frames by fitting a V (a conductor's ictus is a bounce, not a rounded
  turn) through the lowest sample and its neighbours. Confidence grows with the stroke.
- Beats feed a `tempo.BeatFollower`: the conducted tempo and the beat count (with phase).
- Cut-off: a fist held for FIST_HOLD_SECONDS, or both hands dropped out of the
  picture or to its bottom for DROP_SECONDS, while conducting. It ends the conducting
  (the follower forgets the tempo) until the next beats.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from .one_euro import OneEuroFilter
from .schema import HAND_SIDES, HAND_SIGNAL_NAMES, FeatureFrame
from .tempo import BeatFollower

STROKE_SECONDS = 1.0        # stroke size is the palm's vertical travel over this much history
STROKE_FULL = 0.4           # travel (of the picture's height) that counts as the biggest stroke
MIN_STROKE = 0.04           # a descent shallower than this is not a beat
ICTUS_HYSTERESIS = 0.015    # the palm must turn by this much before a bottom or top counts
LEAD_MARGIN = 1.5           # the other hand leads once it travels this many times as far
OPEN_REACH = (1.0, 1.8)     # fingertip reach / knuckle reach at a fist and at an open palm
PINCH_GAP = (0.15, 0.8)     # thumb-index gap / palm size when touching and when apart
FIST_OPENNESS = 0.2         # below this a hand is a fist
FIST_HOLD_SECONDS = 0.4
DROP_HEIGHT = 0.1           # a palm below this height has dropped
DROP_SECONDS = 0.3

_FINGER_TIPS = np.array([8, 12, 16, 20])
_FINGER_BASES = np.array([5, 9, 13, 17])
_PALM = np.array([0, 5, 9, 13, 17])          # wrist and knuckles: their mean is the palm centre
_OPENNESS = HAND_SIGNAL_NAMES.index("openness")


def palm_centre(landmarks: np.ndarray) -> np.ndarray:
    """(21, 3) hand landmarks -> (2,) x, y of the palm centre (image-normalised)."""
    return landmarks[_PALM, :2].mean(axis=0)


def hand_shape(landmarks: np.ndarray, aspect: float) -> tuple[float, float]:
    """(openness, pinch) 0-1 of one hand; `aspect` = image width / height (x and z are in widths)."""
    points = landmarks * np.array([aspect, 1.0, aspect], np.float32)     # isotropic units of the height
    wrist = points[0]
    reach = np.linalg.norm(points[_FINGER_TIPS] - wrist, axis=1) / np.maximum(
        np.linalg.norm(points[_FINGER_BASES] - wrist, axis=1), 1e-6)
    openness = (reach.mean() - OPEN_REACH[0]) / (OPEN_REACH[1] - OPEN_REACH[0])
    palm = max(float(np.linalg.norm(points[9] - wrist)), 1e-6)
    gap = float(np.linalg.norm(points[4] - points[8])) / palm
    pinch = (PINCH_GAP[1] - gap) / (PINCH_GAP[1] - PINCH_GAP[0])
    return float(np.clip(openness, 0.0, 1.0)), float(np.clip(pinch, 0.0, 1.0))


def v_vertex(times: np.ndarray, heights: np.ndarray) -> float:
    """Time of the apex of a V (y = Y - s |t - t*|) through three samples, the middle one the extreme.

    The apex lies on the side of the nearer neighbour; the other two samples are on one
    branch and give the slope s, and the nearer neighbour then places the apex.
    """
    (t0, t1, t2), (y0, y1, y2) = times, heights
    if y2 >= y0:                                   # apex between t1 and t2: t0, t1 on the first branch
        slope = max((y1 - y0) / max(t1 - t0, 1e-6), 1e-9)
        apex = (t1 + t2) / 2 - (y1 - y2) / (2 * slope)
    else:                                          # apex between t0 and t1: t1, t2 on the second branch
        slope = max((y1 - y2) / max(t2 - t1, 1e-6), 1e-9)
        apex = (t0 + t1) / 2 + (y1 - y0) / (2 * slope)
    return float(np.clip(apex, t0, t2))


class _IctusDetector:
    """The leading palm's height over time -> ictus times (bottoms of down strokes)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=64)     # (t, y), y grows downwards
        self._falling = True
        self._extreme = -1                     # index into _samples of the running bottom (or top)
        self._top: float | None = None

    def update(self, t: float, y: float) -> tuple[float, float] | None:
        """Feed one sample; return (ictus time, stroke depth, bottom height) when a bottom is confirmed."""
        if self._samples and len(self._samples) == self._samples.maxlen:
            self._extreme -= 1                 # the oldest sample falls out of the deque
        self._samples.append((t, y))
        last = len(self._samples) - 1
        if self._falling:               # the highest point before the bottom (the first stroke: since reset)
            self._top = y if self._top is None else min(self._top, y)
        if self._extreme < 0:
            self._extreme = last
            return None
        extreme_y = self._samples[self._extreme][1]
        if self._falling:
            if y >= extreme_y:
                self._extreme = last
                return None
            if extreme_y - y < ICTUS_HYSTERESIS:
                return None
            bottom, depth = self._extreme, extreme_y - self._top
            self._falling, self._extreme = False, last
            if depth < MIN_STROKE or bottom == 0:
                return None
            around = [self._samples[i] for i in (bottom - 1, bottom, bottom + 1)]
            times, heights = (np.array(v) for v in zip(*around))
            return v_vertex(times, heights), depth, extreme_y
        if y <= extreme_y:
            self._extreme = last
        elif y - extreme_y >= ICTUS_HYSTERESIS:
            self._top = extreme_y
            self._falling, self._extreme = True, last
        return None


class Conductor:
    """Per-frame conductor signals and events; one instance per tracked stream."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        self._filters = [OneEuroFilter(min_cutoff, beta, d_cutoff) for _ in HAND_SIDES]
        self._history = [deque() for _ in HAND_SIDES]      # (t, palm y) over STROKE_SECONDS
        self._ictus = _IctusDetector()
        self._follower = BeatFollower()
        self._leading: int | None = None        # index into HAND_SIDES
        self._fist_since: float | None = None
        self._dropped_since: float | None = None
        self._conducting = False

    def update(self, frame: FeatureFrame, aspect: float = 4 / 3) -> FeatureFrame:
        """Fill `frame`'s hand signals and conductor fields from its hands; returns the frame.

        `aspect` is the picture's width / height (landmark x is in widths, y in heights).
        """
        t = frame.t
        travel = np.zeros(len(HAND_SIDES))
        for side in range(len(HAND_SIDES)):
            history = self._history[side]
            if not frame.hands_found[side]:
                history.clear()
                self._filters[side].reset()
                frame.hand_signals[side] = 0.0
                continue
            history.append((t, float(frame.palms[side, 1])))
            while t - history[0][0] > STROKE_SECONDS:
                history.popleft()
            heights = [y for _, y in history]
            travel[side] = max(heights) - min(heights)
            openness, pinch = hand_shape(frame.hands[side], aspect)
            raw = np.array([1.0 - frame.palms[side, 1], travel[side] / STROKE_FULL, openness, pinch])
            frame.hand_signals[side] = np.clip(self._filters[side](raw, t), 0.0, 1.0)
        self._follow_leading_hand(frame, travel)
        self._cutoff(frame)
        if self._conducting and not self._follower.conducting(t):
            self._conducting = False
        frame.conducting = self._conducting
        frame.conduct_bpm = self._follower.bpm if self._conducting else 0.0
        frame.conduct_beats = self._follower.beats_at(t)
        return frame

    def _follow_leading_hand(self, frame: FeatureFrame, travel: np.ndarray) -> None:
        found = [side for side in range(len(HAND_SIDES)) if frame.hands_found[side]]
        if not found:
            self._leading = None
            self._ictus.reset()
            return
        best = max(found, key=lambda side: travel[side])
        if self._leading not in found or (best != self._leading and travel[best] > LEAD_MARGIN * travel[self._leading]):
            self._leading = best
            self._ictus.reset()
        frame.leading_hand = self._leading
        ictus = self._ictus.update(frame.t, float(frame.palms[self._leading, 1]))
        if ictus is None:
            return
        when, depth, bottom = ictus
        if bottom > 1.0 - DROP_HEIGHT:
            return                             # a hand leaving the picture at the bottom: a drop, not a beat
        frame.beat_lag = frame.t - when
        frame.beat_confidence = float(min(depth / STROKE_FULL, 1.0))
        self._follower.beat(when)
        self._conducting = self._follower.conducting(frame.t)

    def _cutoff(self, frame: FeatureFrame) -> None:
        t = frame.t
        fist = any(frame.hands_found[side] and frame.hand_signals[side, _OPENNESS] < FIST_OPENNESS
                   for side in range(len(HAND_SIDES)))
        dropped = not any(frame.hands_found[side] and frame.palms[side, 1] < 1.0 - DROP_HEIGHT
                          for side in range(len(HAND_SIDES)))
        self._fist_since = (self._fist_since if self._fist_since is not None else t) if fist else None
        self._dropped_since = (self._dropped_since if self._dropped_since is not None else t) if dropped else None
        held = self._fist_since is not None and t - self._fist_since >= FIST_HOLD_SECONDS
        gone = self._dropped_since is not None and t - self._dropped_since >= DROP_SECONDS
        if self._conducting and (held or gone):
            frame.cutoff = True
            self._conducting = False
            self._follower.reset()
            self._ictus.reset()

"""The rolling feature timeline: tracked frames in, 50 Hz condition windows out.

The tracker delivers frames at the camera's irregular rate; the adaptor wants one
feature vector per EnCodec frame (50 Hz). The timeline keeps the recent raw frames in
preallocated rings and resamples on demand with the paper's linear interpolation
(eq. 1 for the face, eq. 3 for the motion; the flow field is treated the same way).

Thread use: the tracking thread pushes, the scheduler thread reads `window()` (the thread
map is in `live/session.py`); one lock guards the rings and is held only for copies,
never for tracking or generation.
"""
from __future__ import annotations

import threading

import numpy as np

from .schema import CONDUCT_DIM, FACE_DIM, FLOW_SHAPE, FRAME_RATE, MOTION_DIM, FeatureFrame, TimelineWindow

MAX_CAMERA_RATE = 60.0   # frames per second the ring is sized for; faster input keeps less history


def interpolate(times: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Resample `values` (N, ...) stamped at increasing `times` (N,) onto `grid` (G,) -> (G, ...).

    Eq. (1) and (3): with t the fractional source-frame index of a grid time,
    i = floor(t), alpha = t - i, z_hat_t = (1 - alpha) z_i + alpha z_{i+1}.
    Source frames are not evenly spaced, so t = i + (g - times[i]) / (times[i+1] - times[i]).
    Grid times before the first frame or after the last hold the edge value.
    """
    (n,) = times.shape
    if n == 1:
        return np.repeat(values, len(grid), axis=0)
    i = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, n - 2)      # times[i] <= g (inside)
    alpha = np.clip((grid - times[i]) / (times[i + 1] - times[i]), 0.0, 1.0)
    alpha = alpha.reshape(-1, *([1] * (values.ndim - 1)))                      # (G, 1, ...) broadcasts over features
    return ((1.0 - alpha) * values[i] + alpha * values[i + 1]).astype(np.float32)


def grid_times(n_frames: int, t_end: float) -> np.ndarray:
    """(n_frames,) times of the 50 Hz grid ending at `t_end`, oldest first."""
    return t_end - np.arange(n_frames - 1, -1, -1, dtype=np.float64) / FRAME_RATE


class FeatureTimeline:
    """The last `seconds` of tracked frames; `window()` resamples any stretch onto the 50 Hz grid."""

    def __init__(self, seconds: float = 30.0, capacity: int | None = None):
        """Keeps `capacity` frames: by default `seconds` of a camera at up to MAX_CAMERA_RATE."""
        self.capacity = int(seconds * MAX_CAMERA_RATE) + 2 if capacity is None else capacity
        self._times = np.zeros(self.capacity, np.float64)
        self._face = np.zeros((self.capacity, FACE_DIM), np.float32)
        self._motion = np.zeros((self.capacity, MOTION_DIM), np.float32)
        self._flow = np.zeros((self.capacity, *FLOW_SHAPE), np.float32)
        self._conduct = np.zeros((self.capacity, CONDUCT_DIM), np.float32)
        self._start = 0            # ring index of the oldest frame
        self._count = 0
        self._latest: FeatureFrame | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def push(self, frame: FeatureFrame) -> bool:
        """Add a frame; returns False (and ignores it) if its time is not after the latest one."""
        with self._lock:
            if self._latest is not None and frame.t <= self._latest.t:
                return False
            if self._count == self.capacity:
                self._start = (self._start + 1) % self.capacity
                self._count -= 1
            slot = (self._start + self._count) % self.capacity
            self._times[slot] = frame.t
            self._face[slot] = frame.face_vector()
            self._motion[slot] = frame.motion_vector()
            self._flow[slot] = frame.flow
            self._conduct[slot] = frame.conduct_vector()
            self._count += 1
            self._latest = frame
            return True

    def latest(self) -> FeatureFrame | None:
        return self._latest

    def window(self, n_frames: int, t_end: float | None = None) -> TimelineWindow:
        """The `n_frames` grid frames ending at `t_end` (default: the latest frame's time).

        An empty timeline gives zeros (nothing found); times outside the history hold its edges.
        """
        with self._lock:
            if self._count == 0:
                end = 0.0 if t_end is None else t_end
                return TimelineWindow(end, np.zeros((n_frames, FACE_DIM), np.float32),
                                      np.zeros((n_frames, MOTION_DIM), np.float32),
                                      np.zeros((n_frames, *FLOW_SHAPE), np.float32))
            order = (self._start + np.arange(self._count)) % self.capacity     # ring slots, oldest first
            times = self._times[order]
            end = times[-1] if t_end is None else t_end
            grid = grid_times(n_frames, end)
            # Only the frames that bracket the grid are copied out under the lock.
            lo = max(int(np.searchsorted(times, grid[0], side="right")) - 1, 0)
            hi = min(int(np.searchsorted(times, grid[-1], side="left")) + 1, self._count)
            lo = min(lo, hi - 1)
            slots = order[lo:hi]
            times = times[lo:hi]
            face, motion, flow = self._face[slots], self._motion[slots], self._flow[slots]
            conduct = self._conduct[slots]
        return TimelineWindow(float(end), interpolate(times, face, grid), interpolate(times, motion, grid),
                              interpolate(times, flow, grid), interpolate(times, conduct, grid))

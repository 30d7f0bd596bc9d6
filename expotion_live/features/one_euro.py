"""One-Euro filter (Casiez, Roussel and Vogel, CHI 2012): jitter removal with little lag.

Tracking jitter is the top complaint about MediaPipe bridges. A fixed low-pass is either
smooth and laggy or quick and jittery; the One-Euro filter raises its cutoff with the
signal's speed, so a face at rest is steady and a fast move still comes through:

    alpha(fc, dt) = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)
    dx_hat = lowpass(dx, alpha(d_cutoff, dt))            # smoothed speed
    fc     = min_cutoff + beta * |dx_hat|                # adaptive cutoff
    x_hat  = lowpass(x, alpha(fc, dt))

One filter holds a whole array of signals, each with its own state, and uses the real
timestamps of the frames (cameras do not deliver at a steady rate).
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Elementwise One-Euro over arrays of a fixed shape, fed with (value, time in seconds)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0; got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the past (after the signal was lost): the next value passes through unchanged."""
        self._t: float | None = None
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._t is None:
            self._t, self._x, self._dx = t, x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dt = t - self._t
        if dt <= 0:                       # a repeated timestamp carries no new time: keep the estimate
            return self._x.astype(np.float32)
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.astype(np.float32)

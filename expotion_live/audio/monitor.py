"""The last seconds of what was played, for the stage view's meter and spectrogram.

The audio callback writes (`push`: two slice copies and two integer stores, no allocation,
no lock); the GUI copies the newest samples out whenever it redraws. Unlike the ring
buffer it never waits for its reader: old audio is overwritten, since a view only ever
wants the newest. A read that races a write may see the block being written half new,
which a picture redrawn many times a second never shows.
"""
from __future__ import annotations

import numpy as np

CLIP_LEVEL = 0.999    # a block whose peak reaches this was clipped (the synth's soft clipper stays below 1)


class AudioMonitor:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data = np.zeros(capacity, np.float32)
        self.written = 0        # samples ever pushed
        self.clips = 0          # blocks ever pushed with a clipped peak

    def push(self, block: np.ndarray, peak: float) -> None:
        """Callback-safe: copy one played block (and whether it clipped) in."""
        n = min(block.shape[0], self.capacity)
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = block[:first]
        self._data[:n - first] = block[first:n]
        if peak >= CLIP_LEVEL:
            self.clips += 1
        self.written += n

    def latest(self, n: int) -> np.ndarray:
        """A copy of the newest `n` samples, oldest first (zeros before anything was played)."""
        n = min(n, self.capacity)
        end = self.written % self.capacity
        index = np.arange(end - n, end) % self.capacity
        out = self._data[index]
        if self.written < n:
            out[:n - self.written] = 0.0
        return out

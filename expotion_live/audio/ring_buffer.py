"""The single-producer/single-consumer sample ring between the generator and the audio callback.

Why a hand-made ring and not a `queue.Queue`: the audio callback must never take a lock
or allocate. Here the storage is allocated once, and each side owns one counter: the
producer only advances `write_index`, the consumer only advances `read_index`. Both are
monotonically increasing sample counts (position in the ring = index % capacity), so
"how much is buffered" is simply `write_index - read_index`, and a Python int store is
atomic under the GIL: no lock is needed.
"""
from __future__ import annotations

import time

import numpy as np


class RingBuffer:
    """Mono float32 SPSC ring. Producer: `write`. Consumer: `read_into` (callback-safe)."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, np.float32)
        self.write_index = 0          # samples ever written (producer-owned)
        self.read_index = 0           # samples ever consumed, underrun zeros excluded (consumer-owned)
        self.underrun_samples = 0     # zeros the consumer had to invent after the first sound (consumer-owned)
        self.underrun_blocks = 0      # reads that came up short (consumer-owned)
        self.last_read_time = 0.0     # time.monotonic() of the last read: maps ring positions to play times

    def available(self) -> int:
        """Samples buffered and not yet played."""
        return self.write_index - self.read_index

    def space(self) -> int:
        """Samples the producer may write without overwriting unplayed audio."""
        return self.capacity - self.available()

    def write(self, samples: np.ndarray) -> int:
        """Copy as many of `samples` as fit; return how many were written (producer side)."""
        n = min(len(samples), self.space())
        if n <= 0:
            return 0
        start = self.write_index % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = samples[:first]
        self._data[:n - first] = samples[first:n]
        self.write_index += n       # publish only after the copy is complete
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Fill all of `out` (consumer side, callback-safe); zero-fill and count on underrun.

        Returns the number of real samples copied.
        """
        wanted = out.shape[0]
        n = min(wanted, self.write_index - self.read_index)
        start = self.read_index % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._data[start:start + first]
        out[first:n] = self._data[:n - first]
        if n < wanted:
            out[n:] = 0.0
            if self.read_index + n > 0:   # silence before the first sound is pre-roll, not an underrun
                self.underrun_samples += wanted - n
                self.underrun_blocks += 1
        self.read_index += n
        self.last_read_time = time.monotonic()
        return n

"""The music's rate to the device's: a thread that resamples ahead of the callback.

The engine renders at the model's rate (EnCodec: 32 kHz); audio interfaces and JACK
servers run at 44.1, 48 or 96 kHz. Resampling is a band-limited filter (soxr) with
state carried across blocks, so it runs on its own thread (`audio-resampler`): it takes
blocks from the `BlockPlayer` (the ring, the DSP, the recording tap) and keeps a second,
device-rate ring a few blocks ahead. The callback only copies out of that ring.
"""
from __future__ import annotations

import threading

import numpy as np

from .ring_buffer import RingBuffer


class ResampledFeed:
    """A callback-safe `fill` at `device_rate`, fed from `player` at `source_rate`."""

    def __init__(self, player, block_size: int, source_rate: int, device_rate: int, lead_seconds: float):
        import soxr

        self.player = player
        self.source_rate = source_rate
        self.device_rate = device_rate
        self.lead = max(1, round(lead_seconds * device_rate))    # device samples kept ready for the callback
        self.ring = RingBuffer(self.lead + 4 * round(block_size * device_rate / source_rate) + 64)   # soxr emits in bursts
        self._block = np.zeros(block_size, np.float32)
        self._poll = 0.25 * block_size / source_rate
        self._soxr = soxr.ResampleStream(source_rate, device_rate, 1, dtype="float32", quality="HQ")
        self.underflows = 0           # callbacks the resampler did not keep up with (after the first sound)
        self.dropped_samples = 0      # device samples those callbacks played as silence
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audio-resampler", daemon=True)

    @property
    def lead_seconds(self) -> float:
        return self.lead / self.device_rate

    def fill(self, out: np.ndarray) -> None:
        """Fill `out` from the device-rate ring (callback-safe); count what the resampler missed."""
        n = self.ring.read_into(out)
        if n < out.shape[0] and self.player.first_sound_time:
            self.underflows += 1
            self.dropped_samples += out.shape[0] - n

    def _top_up(self) -> None:
        while self.ring.available() < self.lead:
            self.player.fill(self._block)
            self.ring.write(self._soxr.resample_chunk(self._block))

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            self._top_up()

    def start(self) -> None:
        self._top_up()                # the device's first burst finds the ring ready
        self._thread.start()

    def stop(self) -> None:
        """Stop taking blocks from the player (after this another consumer may)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._soxr = None             # soxr's state is freed now, not at interpreter exit

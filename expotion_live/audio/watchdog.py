"""A device that errors or stops calling back is noticed within a second and replaced.

A sound server killed mid-show (PulseAudio, JACK) leaves PortAudio's callback thread
silent without an error: the ring stops draining, the scheduler waits forever and the
run never ends. The `Supervised` output counts the device's callbacks from its own
thread (`audio-watchdog`); a pause longer than STALL_SECONDS is a stall (counted), one
of FAIL_SECONDS, or an error the device reports, is a failure: the device is detached
from the player (and never closed: a stream whose server died blocks whoever
closes it) and the takeover (the file sink) plays on from the same ring, so the
recording goes on without a gap and `failure` holds the one line to print.
"""
from __future__ import annotations

import threading
import time

STALL_SECONDS = 0.25     # a consumer this late stalled: devices call back every few milliseconds
FAIL_SECONDS = 0.6       # a device silent this long has failed: noticed, and said, within a second
POLL_SECONDS = 0.05
ABANDONED: list = []     # outputs of failed devices, kept for the process's life: their server may still
                         # call back into them, and a callback freed under it crashes the process


class Supervised:
    """`device` (AudioStream or JackStream) until it fails, then `takeover()` (a FileSink).

    `describe` is how the failure line ends: what the takeover means for the performer.
    """

    def __init__(self, device, takeover, describe: str):
        self.device = device
        self.player = device.player
        self.latency_seconds = device.latency_seconds
        self.failure = ""             # "" while the device plays; else the one line saying what happened
        self._takeover = takeover
        self._describe = describe
        self._replacement = None
        self._stalls, self._stalled_seconds = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="audio-watchdog", daemon=True)

    # what the session reads: the live consumer's values plus the failed device's
    @property
    def device_name(self) -> str:
        return self.device.device_name if self._replacement is None else self._replacement.device_name

    @property
    def underflows(self) -> int:
        return self.device.underflows + (self._replacement.underflows if self._replacement else 0)

    @property
    def stalls(self) -> int:
        return self._stalls + (self._replacement.stalls if self._replacement else 0)

    @property
    def stalled_seconds(self) -> float:
        return self._stalled_seconds + (self._replacement.stalled_seconds if self._replacement else 0.0)

    @property
    def dropped_samples(self) -> int:
        """Silence the device played that the ring had not asked for, in the ring's samples."""
        return self.device.dropped_samples

    def start(self) -> None:
        self.device.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._replacement is not None:
            self._replacement.stop()
        else:
            self.device.stop()

    def _watch(self) -> None:
        count, since = self.device.callbacks, time.monotonic()
        while not self._stop.wait(POLL_SECONDS):
            now = time.monotonic()
            if self.device.callbacks != count:
                if now - since >= STALL_SECONDS:
                    self._stalls += 1
                    self._stalled_seconds += now - since
                count, since = self.device.callbacks, now
            elif self.device.error or now - since >= FAIL_SECONDS:
                self._stalls += 1
                self._stalled_seconds += now - since
                self._fail(self.device.error or f"no callback for {now - since:.1f} s")
                return

    def _fail(self, why: str) -> None:
        self.device.abandon()         # from here on only the takeover consumes the ring
        replacement = self._takeover()
        replacement.start()
        self._replacement = replacement
        played = self.player.blocks_played * self.player.dsp.block_size / self.player.dsp.sample_rate
        self.failure = (f"audio output {self.device.device_name!r} failed at {played:.1f} s ({why}); "
                        f"{self._describe}")

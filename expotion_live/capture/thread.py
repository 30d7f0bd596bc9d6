"""The capture thread: reads a `FrameSource` and always offers the newest frame.

A camera delivers at its own pace whatever we do; if tracking falls behind, queueing
frames would make every feature later than the last, so the thread keeps one slot and
a newer frame replaces an unconsumed one (counted in `dropped`). A video file played
as fast as possible (`source.realtime == False`) has no pace of its own: there the
thread waits until the consumer took the frame, so no frame is lost and offline and
live runs over a file see the same frames.

When a camera stops delivering (`SourceLost`: unplugged, driver reset), the thread
reports it in `status`, keeps re-opening it every `reconnect_interval` seconds and
carries on when it is back; the show does not stop. Any other error ends the thread
with `error` set and `status` saying why.
"""
from __future__ import annotations

import logging
import threading

from .sources import CapturedFrame, CaptureError, FrameSource, SourceLost

log = logging.getLogger(__name__)


class CaptureThread:
    """Owns the source. Consumers call `latest()` (peek) or `wait_next()` (take the next new frame)."""

    def __init__(self, source: FrameSource, reconnect_interval: float = 1.0):
        self.source = source
        self.reconnect_interval = reconnect_interval
        self.frames_read = 0
        self.dropped = 0              # frames replaced before anyone took them
        self.reconnects = 0
        self.first_frame_time: float | None = None   # `t` of the first frame read: a take's clock starts there
        self.status = "stopped"       # running | lost: ... | ended | error: ... | stopped
        self.error: Exception | None = None
        self._slot: CapturedFrame | None = None
        self._taken = True            # the frame in the slot has been handed to wait_next()
        self._finished = False        # no more frames will come (end of file, error, stop)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    # -- consumer side ---------------------------------------------------------------
    def latest(self) -> CapturedFrame | None:
        """The newest frame without taking it (previews); None before the first frame."""
        return self._slot

    def wait_next(self, after_index: int = -1, timeout: float | None = None) -> CapturedFrame | None:
        """Take the newest frame whose index is above `after_index`; None on timeout or once finished."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: (self._slot is not None and self._slot.index > after_index) or self._finished,
                timeout)
            if not ready or self._slot is None or self._slot.index <= after_index:
                return None
            self._taken = True
            self._cond.notify_all()
            return self._slot

    @property
    def finished(self) -> bool:
        """True when no more frames will come (file ended, error, or stopped)."""
        return self._finished

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> CaptureThread:
        self.status = "running"
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():            # stuck in a driver call: closing under it could crash
            log.warning("capture from %s did not stop within %.1f s", self.source.description, timeout)
        else:
            self.source.close()
        if self.status == "running":
            self.status = "stopped"

    # -- producer --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    frame = self.source.read()
                except SourceLost as lost:
                    self._reconnect(lost)
                    continue
                if frame is None:
                    self.status = "ended"
                    break
                self._offer(frame)
        except Exception as err:                      # noqa: BLE001 - reported to the owner, not lost
            self.error = err
            self.status = f"error: {err}"
            if not isinstance(err, CaptureError):
                log.exception("capture from %s failed", self.source.description)
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _offer(self, frame: CapturedFrame) -> None:
        with self._cond:
            if not self.source.realtime:
                # As fast as the consumer: wait for it to take the previous frame.
                self._cond.wait_for(lambda: self._taken or self._stop.is_set())
            elif not self._taken:
                self.dropped += 1
            if self.first_frame_time is None:
                self.first_frame_time = frame.t
            self._slot, self._taken = frame, False
            self.frames_read += 1
            self._cond.notify_all()

    def _reconnect(self, lost: SourceLost) -> None:
        self.status = f"lost: {lost}"
        log.warning("%s; re-opening every %.1f s", lost, self.reconnect_interval)
        while not self._stop.wait(self.reconnect_interval):
            try:
                self.source.reopen()
            except CaptureError:
                continue
            self.reconnects += 1
            self.status = "running"
            log.warning("%s is back", self.source.description)
            return

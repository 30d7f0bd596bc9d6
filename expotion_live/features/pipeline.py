"""The tracking thread: the one thread that runs MediaPipe, from captured frames to the timeline.

It takes the newest frame from the capture thread's mailbox, pushes each `FeatureFrame`
into the `FeatureTimeline` and calls the frame listeners, which must not block. Who
reads what, from which thread: the thread map in `live/session.py`.
"""
from __future__ import annotations

import abc

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..capture.thread import CaptureThread
from ..settings import TrackingSettings
from .schema import FeatureFrame
from .timeline import FeatureTimeline
from .tracker import Tracker

log = logging.getLogger(__name__)

FrameListener = Callable[[FeatureFrame, "np.ndarray | None"], None]
RATE_SMOOTHING = 0.1     # weight of the newest frame in the fps / cost moving averages


class FrameListeners:
    """The callbacks that get every tracked frame; a failing one is logged once and counted, never fatal."""

    def __init__(self, listeners: Iterable[FrameListener] = ()):
        self._listeners: list[FrameListener] = list(listeners)
        self.errors = 0

    def add(self, listener: FrameListener) -> None:
        self._listeners = [*self._listeners, listener]     # copy-on-write: notify() never sees a half update

    def notify(self, frame: FeatureFrame, image: np.ndarray | None) -> None:
        for listener in self._listeners:
            try:
                listener(frame, image)
            except Exception:                         # noqa: BLE001 - one bad listener must not stop tracking
                self.errors += 1
                if self.errors == 1:
                    log.exception("a frame listener failed (further failures are only counted)")


@dataclass(frozen=True)
class TrackingStats:
    """Plain values for status displays."""

    fps: float                # frames tracked per second (moving average)
    tracking_ms: float        # cost of one Tracker.process (moving average)
    processed: int
    dropped: int              # camera frames skipped because tracking was behind
    listener_errors: int
    status: str               # running | lost: ... (camera being re-opened) | ended | error: ... | stopped


class FeatureThread(abc.ABC):
    """What feeds the timeline on its own thread: listeners, start/stop/join, a status.

    Subclasses (`TrackingThread`, `recording.RecordingPlayer`) implement `_run`, `stats`
    and `calibrate`; the live session drives either one the same way.
    """

    def __init__(self, timeline: FeatureTimeline, on_frame: Iterable[FrameListener], name: str):
        self.timeline = timeline
        self.listeners = FrameListeners(on_frame)
        self.status = "stopped"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add_listener(self, listener: FrameListener) -> None:
        """`listener(frame, image_bgr or None)` runs on this thread after each frame."""
        self.listeners.add(listener)

    def start(self):
        self.status = "running"
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop feeding (a capture thread is stopped by its owner)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.status == "running":
            self.status = "stopped"

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end by itself (a file or recording that ended)."""
        self._thread.join(timeout)

    def close(self) -> None:
        """Release what the thread's work holds, after `stop` or when it never started (a recording: nothing)."""

    @abc.abstractmethod
    def _run(self) -> None:
        """The thread's loop: feed frames until `_stop` is set or the input ends."""


class TrackingThread(FeatureThread):
    """Capture mailbox -> Tracker -> timeline and listeners, on one thread."""

    def __init__(self, capture_thread: CaptureThread, tracker: Tracker, timeline: FeatureTimeline,
                 on_frame: Iterable[FrameListener] = ()):
        super().__init__(timeline, on_frame, name="tracking")
        self.capture = capture_thread
        self.tracker = tracker
        self._fps = 0.0
        self._tracking_ms = 0.0
        self._processed = 0
        self.error: Exception | None = None

    @classmethod
    def open(cls, capture_thread: CaptureThread, settings: TrackingSettings, timeline: FeatureTimeline,
             on_frame: Iterable[FrameListener] = ()) -> TrackingThread:
        """With its own Tracker: the MediaPipe graphs load now, before anything starts; `close` releases them.
        The live session and `track` open tracking this one way."""
        return cls(capture_thread, Tracker(settings), timeline, on_frame)

    def close(self) -> None:
        self.tracker.close()

    def calibrate(self) -> bool:
        """The next half second of face becomes the neutral face (callable from any thread)."""
        self.tracker.calibrate()
        return True

    def stats(self) -> TrackingStats:
        """Plain values; a lost camera shows in `status` ("lost: ...") while it is being re-opened."""
        status = self.capture.status if self.capture.status.startswith("lost") else self.status
        return TrackingStats(self._fps, self._tracking_ms, self._processed, self.capture.dropped,
                             self.listeners.errors, status)

    def _run(self) -> None:
        last_index, last_wall = -1, None
        try:
            while not self._stop.is_set():
                captured = self.capture.wait_next(last_index, timeout=0.1)
                if captured is None:
                    if self.capture.finished:
                        self.status = "ended" if self.capture.error is None else f"error: {self.capture.error}"
                        return
                    continue
                last_index = captured.index
                started = time.perf_counter()
                frame = self.tracker.process(captured.image_bgr, captured.t)
                cost = time.perf_counter() - started
                self.timeline.push(frame)
                self.listeners.notify(frame, captured.image_bgr)
                now = time.perf_counter()
                self._update_rates(cost, None if last_wall is None else now - last_wall)
                last_wall = now
        except Exception as err:                      # noqa: BLE001 - reported to the owner, not lost
            self.error = err
            self.status = f"error: {err}"
            log.exception("tracking failed")

    def _update_rates(self, cost: float, interval: float | None) -> None:
        self._processed += 1
        a = RATE_SMOOTHING if self._processed > 1 else 1.0
        self._tracking_ms += a * (1000.0 * cost - self._tracking_ms)
        if interval is not None and interval > 0:
            b = RATE_SMOOTHING if self._fps > 0 else 1.0
            self._fps += b * (1.0 / interval - self._fps)

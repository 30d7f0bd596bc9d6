"""The window's background work: loading the model, starting and stopping the session, polling its status.

The GUI thread sends requests to `SessionWorker` as queued signals and never waits on it,
so loading MusicGen, a slow chunk or a stop that waits for the chunk being rendered cannot
freeze the window. Where each thread hands what to whom: the map in `live/session.py`.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
from PyQt6.QtCore import QMetaObject, QObject, Qt, QThread, QTimer, pyqtSignal, pyqtSlot

from ..features.schema import FeatureFrame
from ..live.controller import LiveController
from ..live.session import SessionStatus
from ..media import MediaError
from ..settings import Settings
from .performance import PerformanceRecorder

log = logging.getLogger(__name__)

STATUS_INTERVAL_MS = 250    # readouts refresh rate: fast enough to watch, cheap for the worker
RECORD_ADVICE = "tick 'Record the performance' to keep what is played"   # the window has no --out


class LatestFrame:
    """The newest (features, image) from the tracking thread; older ones are simply replaced."""

    def __init__(self):
        self._lock = threading.Lock()
        self._item: tuple[FeatureFrame, np.ndarray | None] | None = None

    def put(self, frame: FeatureFrame, image: np.ndarray | None) -> None:
        with self._lock:
            self._item = (frame, image)

    def take(self) -> tuple[FeatureFrame, np.ndarray | None] | None:
        """The newest item if it was not taken yet, else None."""
        with self._lock:
            item, self._item = self._item, None
            return item


def weights_notice(settings: Settings) -> str:
    """What to tell the performer when MusicGen cannot be used, or "" when it can."""
    from ..model.download import has_weights

    if settings.engine.kind == "synth" or has_weights(settings.model.dir):
        return ""
    return (f"No MusicGen weights in {settings.model.dir}. Download them (2.4 GB) with: "
            f"expotion-live download small   and set Setup > Model folder to checkpoints/musicgen-small. "
            f"Until then the built-in gesture synth plays; tracking and OSC work as usual.")


class SessionWorker(QObject):
    """Runs the session the `LiveController` opens; every slot runs on the worker thread."""

    started = pyqtSignal(str)       # what plays where, e.g. "the built-in gesture synth -> pulse"
    failed = pyqtSignal(str)        # one-line reason the session could not start
    notice = pyqtSignal(str)        # advice that does not stop anything (no weights)
    stopped = pyqtSignal()
    status = pyqtSignal(SessionStatus)
    recorded = pyqtSignal(str)      # where the recorded performance was saved
    monitor = pyqtSignal(object)    # the running session's AudioMonitor for the stage view; None when stopped
    chunk_started = pyqtSignal(int, float)   # chunk index, time.monotonic() when it started playing

    def __init__(self, controller: LiveController, preview: LatestFrame):
        super().__init__()
        self._controller = controller
        self._preview = preview
        self._session = None
        self._timer: QTimer | None = None
        self._recorder: PerformanceRecorder | None = None

    @pyqtSlot()
    def setup(self) -> None:
        """Runs first on the worker thread: timers must be created on the thread they fire on."""
        self._timer = QTimer(self)
        self._timer.setInterval(STATUS_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)

    @pyqtSlot(object, object)
    def start_session(self, settings: Settings, recorder: PerformanceRecorder | None) -> None:
        """Open the session (may load MusicGen) and start it; `recorder` films the show."""
        if self._session is not None:
            return
        notice = weights_notice(settings)
        if notice and settings.engine.kind == "musicgen":
            self.failed.emit(notice)
            return
        if notice:
            self.notice.emit(notice)
        session = None
        try:
            session = self._controller.open_session(settings, record_advice=RECORD_ADVICE)
            session.add_frame_listener(self._preview.put)
            session.add_chunk_listener(lambda index, _: self.chunk_started.emit(index, time.monotonic()))
            if recorder is not None:
                session.add_frame_listener(recorder.on_frame)
            session.start()
            if recorder is not None:
                recorder.start(origin=session.started_at)      # the played WAV starts here
        except Exception as err:   # any failure to start is shown in the window, never a crash
            log.exception("session failed to start")
            if session is not None:
                self._controller.close_session()
            self.failed.emit(f"could not start: {err}")
            return
        self._session, self._recorder = session, recorder
        self._told_failure = ""
        if session.notice:
            self.notice.emit(session.notice)
        self._timer.start()
        self.monitor.emit(session.monitor)
        self.started.emit(f"{session.source.name} -> {session.status().output}")

    @pyqtSlot()
    def stop_session(self) -> None:
        """Waits for the chunk being rendered (the model cannot be interrupted), here, not on the GUI thread."""
        session, self._session = self._session, None
        if session is None:
            return
        self._timer.stop()
        recorder, self._recorder = self._recorder, None
        try:
            played = session.stop()
        finally:
            self._controller.close_session()
            self.monitor.emit(None)
            self.stopped.emit()
        if recorder is not None:
            try:
                self.recorded.emit(str(recorder.finish(played)))
            except MediaError as err:
                self.notice.emit(str(err))

    @pyqtSlot()
    def quit(self) -> None:
        """End the worker thread's event loop; queued after `stop_session`, so it runs once the session stopped."""
        self.thread().quit()

    def _poll(self) -> None:
        status = self._session.status()
        self._controller.on_status(status)
        if status.output_failure and status.output_failure != self._told_failure:   # a device lost mid-show: once
            self._told_failure = status.output_failure
            self.notice.emit(status.output_failure)
        self.status.emit(status)


class WorkerThread:
    """The worker and its QThread, with the explicit teardown Qt needs: stop, quit, wait."""

    def __init__(self, worker: SessionWorker):
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName("session-worker")
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.setup)
        self.thread.start()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Ask the worker to stop the session and then end its thread; wait at most `timeout_ms` for that.

        Returns False if the thread did not end in time (a render longer than that is still running).
        """
        QMetaObject.invokeMethod(self.worker, "stop_session", Qt.ConnectionType.QueuedConnection)
        QMetaObject.invokeMethod(self.worker, "quit", Qt.ConnectionType.QueuedConnection)
        return self.thread.wait(timeout_ms)

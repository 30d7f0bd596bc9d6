"""The stage view: how the performer's gestures turn into sound, drawn under the camera.

- `LevelMeter`: peak and RMS of what is played, in dBFS, with a clip light held for a while.
- `Spectrogram`: the played audio's spectrum scrolling right to left, log frequency upwards.
- `SignalPlot`: the last `PLOT_SECONDS` of the main signals, chunk starts as vertical lines,
  so a gesture can be seen arriving in the music one control latency later.

GUI thread only. `StageView.refresh` is called by the window's stage timer; it copies the
newest audio out of the session's `AudioMonitor` (no lock, nothing shared is held) and does
one small FFT, so the tracking thread keeps its cores (bench/stage.py measures it).
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QImage, QPainter, QPen, QPolygonF
from PyQt6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from ..audio.monitor import AudioMonitor
from ..features.schema import EXPRESSION_NAMES, FeatureFrame

FLOOR_DB = -60.0           # bottom of the meter
SPECTRUM_FLOOR_DB = -90.0  # bottom of the spectrogram's colours: quiet partials still show
CLIP_HOLD_SECONDS = 2.0    # the clip light stays on this long after the last clipped block
PEAK_FALL_DB_PER_S = 20.0  # the peak marker falls back slowly enough to be read
FFT_SIZE = 1024            # one spectrogram column: 32 ms at 32 kHz
SPECTRUM_ROWS = 96         # log-spaced frequency rows from LOW_HZ to Nyquist
LOW_HZ = 40.0
SPECTRUM_COLUMNS = 300     # columns kept: at the window's 20 Hz refresh, 15 s of history
PLOT_SECONDS = 10.0
# (name shown, colour, value of a frame): the signals a performer steers with.
PLOT_SIGNALS = (
    ("mouth", QColor(90, 200, 255), lambda f: float(f.expression[EXPRESSION_NAMES.index("mouth_height")])),
    ("smile", QColor(255, 200, 60), lambda f: float(f.expression[EXPRESSION_NAMES.index("smile")])),
    ("motion", QColor(120, 255, 120), lambda f: float(f.motion_energy)),
    ("face", QColor(200, 120, 255), lambda f: 0.5 * float(f.face_found)),
)
BACKGROUND = QColor(20, 20, 24)


def db(value: float) -> float:
    return 20.0 * float(np.log10(max(value, 1e-9)))


def _palette() -> list[int]:
    """Dark blue -> magenta -> orange -> white: loud bins stand out on a dark stage."""
    stops = np.array([[10, 10, 30], [80, 20, 140], [220, 60, 90], [255, 170, 40], [255, 255, 230]], float)
    x = np.linspace(0, len(stops) - 1, 256)
    rgb = np.stack([np.interp(x, np.arange(len(stops)), stops[:, c]) for c in range(3)], axis=1).astype(int)
    return [QColor(*row).rgb() for row in rgb]


class LevelMeter(QWidget):
    """Peak (a line that falls back slowly) and RMS (the bar) of the audio since the last update."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedWidth(64)
        self.peak_db = self.rms_db = FLOOR_DB
        self._clip_until = 0.0

    @property
    def clipping(self) -> bool:
        return time.monotonic() < self._clip_until

    def set_levels(self, block: np.ndarray, clipped: bool, elapsed: float) -> None:
        peak = db(float(np.abs(block).max())) if block.size else FLOOR_DB
        self.rms_db = db(float(np.sqrt(np.mean(np.square(block))))) if block.size else FLOOR_DB
        self.peak_db = max(peak, self.peak_db - PEAK_FALL_DB_PER_S * elapsed, FLOOR_DB)
        if clipped:
            self._clip_until = time.monotonic() + CLIP_HOLD_SECONDS
        self.update()

    def _y(self, value_db: float, top: float, height: float) -> float:
        return top + height * min(max(value_db, FLOOR_DB), 0.0) / FLOOR_DB

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)
        clip = QRectF(4, 2, self.width() - 8, 12)
        painter.fillRect(clip, QColor(230, 30, 30) if self.clipping else QColor(60, 20, 20))
        painter.setPen(QColor(230, 230, 230))
        painter.drawText(clip, Qt.AlignmentFlag.AlignCenter, "CLIP")
        top, height, left = 18.0, self.height() - 22.0, 30.0     # dB marks left of the bar
        bar = QRectF(left, self._y(self.rms_db, top, height), self.width() - left - 4, 0)
        bar.setBottom(top + height)
        colour = QColor(230, 190, 40) if self.rms_db > -12 else QColor(60, 200, 90)
        painter.fillRect(bar, colour)
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        y = self._y(self.peak_db, top, height)
        painter.drawLine(QPointF(left - 2, y), QPointF(self.width() - 2, y))
        painter.setPen(QColor(150, 150, 150))
        for mark in (-6, -24, -48):
            y = self._y(mark, top, height)
            painter.drawText(QRectF(0, y - 7, left - 3, 14), Qt.AlignmentFlag.AlignRight, f"{mark}")


class Spectrogram(QWidget):
    """One column per update: the magnitude spectrum of the newest FFT_SIZE samples."""

    def __init__(self, sample_rate: int, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(70)
        self._window = np.hanning(FFT_SIZE).astype(np.float32)
        self._scale = 2.0 / self._window.sum()          # a full-scale sine reads 0 dB
        edges = np.geomspace(LOW_HZ, sample_rate / 2, SPECTRUM_ROWS + 1)
        bins = np.fft.rfftfreq(FFT_SIZE, 1.0 / sample_rate)
        # each row is the loudest bin from its lower edge to the next row's (reduceat: one bin when
        # rows are narrower than a bin, as the lowest ones are)
        self._row_starts = np.minimum(np.searchsorted(bins, edges[:-1]), len(bins) - 1)
        self.pixels = np.zeros((SPECTRUM_ROWS, SPECTRUM_COLUMNS), np.uint8)    # row 0 = highest frequency
        self._colours = _palette()

    def add_column(self, samples: np.ndarray) -> None:
        magnitude = np.abs(np.fft.rfft(samples[-FFT_SIZE:] * self._window)) * self._scale
        rows = np.maximum.reduceat(magnitude, self._row_starts)
        level = 20.0 * np.log10(np.maximum(rows, 1e-9))
        column = np.clip((level - SPECTRUM_FLOOR_DB) / -SPECTRUM_FLOOR_DB * 255.0, 0, 255).astype(np.uint8)
        self.pixels[:, :-1] = self.pixels[:, 1:]
        self.pixels[:, -1] = column[::-1]
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        data = np.ascontiguousarray(self.pixels)
        image = QImage(data.data, SPECTRUM_COLUMNS, SPECTRUM_ROWS, SPECTRUM_COLUMNS, QImage.Format.Format_Indexed8)
        image.setColorTable(self._colours)
        painter.drawImage(QRectF(self.rect()), image)
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(QRectF(self.rect()).adjusted(4, 2, 0, 0), Qt.AlignmentFlag.AlignLeft, "spectrum played")


class SignalPlot(QWidget):
    """The main signals over the last PLOT_SECONDS, with chunk starts (the music's updates) marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(70)
        self._frames: deque[tuple[float, tuple[float, ...]]] = deque()
        self._chunks: deque[tuple[float, int]] = deque()

    def add_frame(self, frame: FeatureFrame) -> None:
        self._frames.append((frame.t, tuple(value(frame) for _, _, value in PLOT_SIGNALS)))
        self._forget(time.monotonic())

    def add_chunk(self, index: int, t: float) -> None:
        self._chunks.append((t, index))

    def _forget(self, now: float) -> None:
        for queue in (self._frames, self._chunks):
            while queue and queue[0][0] < now - PLOT_SECONDS:
                queue.popleft()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKGROUND)
        now = time.monotonic()
        self._forget(now)
        w, h = self.width(), self.height() - 14.0

        def x(t: float) -> float:
            return w * (1.0 - (now - t) / PLOT_SECONDS)

        painter.setPen(QPen(QColor(120, 120, 120), 1, Qt.PenStyle.DashLine))
        for t, index in self._chunks:
            painter.drawLine(QPointF(x(t), 14.0), QPointF(x(t), h + 14.0))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for i, (name, colour, _) in enumerate(PLOT_SIGNALS):
            line = QPolygonF([QPointF(x(t), 14.0 + h * (1.0 - min(max(values[i], 0.0), 1.0)))
                              for t, values in self._frames])
            painter.setPen(QPen(colour, 1.0))     # a thin pen: Qt strokes wider lines far more slowly
            painter.drawPolyline(line)
            painter.drawText(QPointF(4 + 60 * i, 11), name)
        painter.setPen(QColor(150, 150, 150))
        painter.drawText(QRectF(0, 0, w - 4, 14), Qt.AlignmentFlag.AlignRight, f"last {PLOT_SECONDS:.0f} s, | = chunk")


class StageView(QWidget):
    """The three views side by side, fed from the session's monitor and the preview's frames."""

    def __init__(self, sample_rate: int, parent=None):
        super().__init__(parent)
        self.meter = LevelMeter()
        self.spectrogram = Spectrogram(sample_rate)
        self.plot = SignalPlot()
        right = QVBoxLayout()
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.spectrogram, 1)
        right.addWidget(self.plot, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.meter)
        layout.addLayout(right, 1)
        self.setMinimumHeight(170)
        self.monitor: AudioMonitor | None = None
        self._seen = (0, 0, time.monotonic())     # (samples, clips, when) at the last refresh

    def set_monitor(self, monitor: AudioMonitor | None) -> None:
        """The running session's played audio (None when stopped: the views hold their last picture)."""
        self.monitor = monitor
        self._seen = (monitor.written, monitor.clips, time.monotonic()) if monitor is not None else (0, 0, 0.0)

    def refresh(self) -> None:
        """Meter and spectrogram from the audio played since the last call; the plot scrolls on."""
        monitor = self.monitor
        if monitor is None:
            return
        written, clips, now = monitor.written, monitor.clips, time.monotonic()
        seen_written, seen_clips, seen_at = self._seen
        self._seen = (written, clips, now)
        new = min(written - seen_written, monitor.capacity)
        audio = monitor.latest(max(new, FFT_SIZE))
        self.meter.set_levels(audio[len(audio) - new:], clips != seen_clips, now - seen_at)
        self.spectrogram.add_column(audio)
        self.plot.update()          # it scrolls with time even when no frame arrives

"""Small display widgets: the camera preview and the signal meters. GUI thread only."""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QColor, QImage, QPainter
from PyQt6.QtWidgets import QFormLayout, QProgressBar, QWidget

METER_STEPS = 1000    # progress-bar resolution for a 0-1 value


class VideoView(QWidget):
    """Shows the latest BGR picture scaled to fit (aspect kept), or a message when there is none."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self._image: QImage | None = None
        self._message = "Press Start to open the camera"
        self.frames_shown = 0

    def show_image(self, image_bgr: np.ndarray) -> None:
        height, width, _ = image_bgr.shape
        data = np.ascontiguousarray(image_bgr)
        # copy(): the QImage must own its pixels once `data` goes away
        self._image = QImage(data.data, width, height, 3 * width, QImage.Format.Format_BGR888).copy()
        self.frames_shown += 1
        self.update()

    def show_message(self, text: str) -> None:
        self._image, self._message = None, text
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(20, 20, 24))
        if self._image is None:
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
            return
        scale = min(self.width() / self._image.width(), self.height() / self._image.height())
        w, h = self._image.width() * scale, self._image.height() * scale
        target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(target, self._image)


class MeterPanel(QWidget):
    """One labelled bar per named 0-1 signal (expression scalars, motion energy)."""

    def __init__(self, names, parent=None):
        super().__init__(parent)
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bars: dict[str, QProgressBar] = {}
        for name in names:
            bar = QProgressBar()
            bar.setRange(0, METER_STEPS)
            bar.setTextVisible(False)
            bar.setMaximumHeight(12)
            layout.addRow(name.replace("_", " "), bar)
            self.bars[name] = bar

    def set_values(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.bars[name].setValue(round(min(max(value, 0.0), 1.0) * METER_STEPS))

    def value(self, name: str) -> float:
        return self.bars[name].value() / METER_STEPS

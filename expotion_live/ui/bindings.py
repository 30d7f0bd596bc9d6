"""The window's settings widgets as one table: each row binds a setting key to the widget that shows it.

The same rows fill the widgets from the live settings (after a start, a preset, a remote
change) and hand the performer's edits back, so a setting is wired once, not once per
direction. A number's widget takes its range from `settings.RANGES`, a fixed-set picker
its items from `settings.CHOICES`: the window offers exactly what a settings file may hold.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PyQt6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QPlainTextEdit, QSpinBox, QWidget

from ..settings import CHOICES, RANGES, Settings, value_of


def _same(value):
    return value


@dataclass(frozen=True)
class Binding:
    """Setting `key` shown in `widget`; `shown` and `kept` convert where the widget's value is not the setting's."""

    key: str
    widget: QWidget
    shown: Callable = _same      # setting -> widget
    kept: Callable = _same       # widget -> setting


def _lines(box: QPlainTextEdit) -> tuple[str, ...]:
    return tuple(line.strip() for line in box.toPlainText().splitlines() if line.strip())


def _access(widget: QWidget):
    """(read, write, the signal of a finished edit or None) for a kind of widget.

    A list (QPlainTextEdit) has no edit signal: an Apply button checks it as a whole."""
    if isinstance(widget, QLineEdit):
        return widget.text, widget.setText, widget.editingFinished
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.value, widget.setValue, widget.valueChanged
    if isinstance(widget, QCheckBox):
        return widget.isChecked, widget.setChecked, widget.toggled
    if isinstance(widget, QComboBox):
        return widget.currentText, widget.setCurrentText, widget.currentTextChanged
    if isinstance(widget, QPlainTextEdit):
        return (lambda: _lines(widget)), (lambda lines: widget.setPlainText("\n".join(lines))), None
    raise TypeError(f"no binding for a {type(widget).__name__}")


class Bindings:
    """The table's rows, live: `show` fills the widgets, an edit calls `keep(key, value)`."""

    def __init__(self, rows: Sequence[Binding], keep: Callable[[str, object], object]):
        self.rows = {row.key: row for row in rows}
        for row in rows:
            widget = row.widget
            if row.key in RANGES:
                widget.setRange(*RANGES[row.key])
            if isinstance(widget, QComboBox) and not widget.isEditable():
                widget.addItems(CHOICES[row.key])
            edited = _access(widget)[2]
            if edited is not None:
                edited.connect(lambda *_, key=row.key: keep(key, self.value(key)))

    def widget(self, key: str) -> QWidget:
        return self.rows[key].widget

    def value(self, key: str):
        """The setting's value as its widget shows it now."""
        row = self.rows[key]
        return row.kept(_access(row.widget)[0]())

    def show(self, settings: Settings, *keys: str) -> None:
        """Show `settings` (only `keys`, when given); the widgets' own signals are held, since nobody edited."""
        for key in keys or self.rows:
            row = self.rows[key]
            row.widget.blockSignals(True)
            _access(row.widget)[1](row.shown(value_of(settings, key)))
            row.widget.blockSignals(False)

"""The performer's window: camera preview with tracking drawn over it, controls, readouts, meters.

Widgets only; which widget shows which setting is one table (`_binding_rows`, see
`bindings.py`). The live settings, presets, OSC out and the control port
belong to `live.controller.LiveController` (the same one the headless run uses); the
widgets edit it and `ControlBridge` brings its remote changes onto the GUI thread. Work
that can take time (loading MusicGen, opening the camera, starting or stopping the
session) goes to `SessionWorker` as a queued signal; results come back as signals
(see `workers.py`). The thread map is in `live/session.py`.

Prompt, guidance, temperature and top-k reach a running session at its next chunk;
model, camera, audio and chunk-size changes apply at the next Start. On close, the settings
the performer changed in the window, and only those, are written into the settings file
(`settings.save_changes`): not what came from the control port, a preset or a one-off flag.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout,
                             QLabel, QLineEdit, QMainWindow, QPlainTextEdit, QPushButton, QScrollArea, QSpinBox,
                             QTabWidget, QVBoxLayout, QWidget)

from .. import settings as settings_mod
from ..features.schema import EXPRESSION_NAMES
from ..live.controller import LiveController
from ..live.session import SessionStatus
from ..outputs.osc.targets import OscTargetError
from ..presets import PresetError
from ..settings import Settings, SettingsError
from .bindings import Binding, Bindings
from .overlay import draw_overlay
from .performance import PerformanceRecorder, new_performance_folder
from .stage import StageView
from .widgets import MeterPanel, VideoView
from .workers import LatestFrame, SessionWorker, WorkerThread

log = logging.getLogger(__name__)

SYSTEM_DEFAULT = "(system default)"   # audio picker entry for settings.audio.device = ""
PREVIEW_INTERVAL_MS = 33         # ~30 Hz: the camera's own rate; faster would redraw the same frame
STAGE_INTERVAL_MS = 50           # meter and spectrogram refresh: smooth to the eye, light on the CPU (bench/stage.py)
METER_NAMES = (*EXPRESSION_NAMES, "motion_energy")
READOUTS = (                      # SessionStatus field, label, format
    ("tracking_fps", "tracking", "{:.1f} fps"),
    ("rtf", "generation RTF", "{:.2f}×"),
    ("buffer_seconds", "buffer", "{:.2f} s"),
    ("underruns", "underruns", "{:d}"),
    ("control_latency", "control latency", "{:.2f} s"),
    ("dsp_latency", "DSP latency", "{:.0f} ms", ),
    ("chunk_index", "chunk", "{:d}"),
    ("tempo", "tempo", "{:.0f} BPM"),
)


class ControlBridge(QObject):
    """The controller's callbacks for the window: called on the control port's thread (or the GUI
    thread), they only emit signals, which Qt queues onto the GUI thread."""

    start_requested = pyqtSignal()
    stop_requested = pyqtSignal()
    changed = pyqtSignal(object, str)     # the live Settings after a remote change or a preset, the preset's name

    def __init__(self, controller: LiveController):
        super().__init__()
        controller.on_start = self.start_requested.emit
        controller.on_stop = self.stop_requested.emit
        controller.on_change = self.changed.emit


def _spin(step: float, decimals: int = 2) -> QDoubleSpinBox:
    """A number box; its range comes with its binding (the settings' RANGES)."""
    box = QDoubleSpinBox()
    box.setSingleStep(step)
    box.setDecimals(decimals)
    box.setKeyboardTracking(False)     # apply when typing is done, not per keystroke
    return box


class MainWindow(QMainWindow):
    start_session = pyqtSignal(object, object)   # Settings, PerformanceRecorder | None -> worker
    stop_session = pyqtSignal()

    def __init__(self, settings: Settings, settings_path: Path | None = None, presets_dir: Path | None = None,
                 performances_dir: Path | None = None):
        """`settings_path`: the performer's changes are saved there on close (None = not saved); the folders
        default to ./presets, ./performances."""
        super().__init__()
        self.setWindowTitle("Expotion Live")
        self.settings_path = settings_path
        self._edited: dict[str, object] = {}     # setting -> the value the performer chose in the window
        self.presets_dir = presets_dir or Path.cwd() / "presets"
        self.performances_dir = performances_dir or Path.cwd() / "performances"
        self.running = False
        self.last_status: SessionStatus | None = None
        self._preview = LatestFrame()
        notices: list[str] = []               # the banner does not exist yet
        self.controller = LiveController(settings, self.presets_dir, notices.append)
        self._build(settings)
        self.form = Bindings(self._binding_rows(), self._set)
        for line in notices:
            self.show_banner(line)
        self.bridge = ControlBridge(self.controller)
        self.bridge.start_requested.connect(self.start)
        self.bridge.stop_requested.connect(self.stop)
        self.bridge.changed.connect(self._on_remote_change)
        self.refresh_devices()
        self._load_settings_into_widgets()
        self._apply_osc_targets()
        self._worker = WorkerThread(SessionWorker(self.controller, self._preview))
        self._connect_worker()
        self.control_state.setText(self.controller.open_control_port())
        self._preview_timer = QTimer(self)
        self._preview_timer.timeout.connect(self._show_preview)
        self._preview_timer.start(PREVIEW_INTERVAL_MS)
        self._stage_timer = QTimer(self)
        self._stage_timer.timeout.connect(self.stage.refresh)
        self._stage_timer.start(STAGE_INTERVAL_MS)

    @property
    def settings(self) -> Settings:
        """The live settings (the controller's)."""
        return self.controller.settings

    @property
    def sender(self):
        return self.controller.sender

    @property
    def control(self):
        """The control port's server, None when it is off or could not open."""
        return self.controller.control

    # ---- layout -------------------------------------------------------------------------
    def _build(self, settings: Settings) -> None:
        self.video = VideoView()
        self.mirror = QCheckBox("Mirror preview")
        self.record_performance = QCheckBox("Record the performance (overlay video + played audio)")
        self.start_button = QPushButton("Start")
        self.calibrate_button = QPushButton("Calibrate neutral face")
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.setStyleSheet("color: #c06000;")
        self.banner.hide()

        self.stage = StageView(settings.audio.sample_rate)
        left = QVBoxLayout()
        left.addWidget(self.video, 1)
        left.addWidget(self.stage)
        toggles = QHBoxLayout()
        toggles.addWidget(self.mirror)
        toggles.addWidget(self.record_performance)
        toggles.addStretch(1)
        left.addLayout(toggles)

        self.readouts: dict[str, QLabel] = {}
        readout_box = QGroupBox("Live")
        readout_form = QFormLayout(readout_box)
        for key, label, _ in READOUTS:
            self.readouts[key] = QLabel("–")
            readout_form.addRow(label, self.readouts[key])
        self.steering_label = QLabel("–")
        readout_form.addRow("steering", self.steering_label)
        self.link_label = QLabel("–")
        readout_form.addRow("Ableton Link", self.link_label)
        self.meters = MeterPanel(METER_NAMES)
        meter_box = QGroupBox("Signals")
        QVBoxLayout(meter_box).addWidget(self.meters)

        tabs = QTabWidget()
        tabs.addTab(self._build_play_tab(), "Play")
        tabs.addTab(self._build_setup_tab(), "Setup")
        tabs.addTab(self._build_osc_tab(), "OSC")
        tabs.addTab(self._build_daw_tab(), "MIDI / Link")

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.calibrate_button)
        panel = QWidget()                 # tabs, readouts and signals scroll: the window fits a 1280x720 screen
        panel_layout = QVBoxLayout(panel)
        panel_layout.setContentsMargins(0, 0, 0, 0)
        panel_layout.addWidget(tabs)
        panel_layout.addWidget(readout_box)
        panel_layout.addWidget(meter_box)
        panel_layout.addStretch(1)
        panel_scroll = QScrollArea()
        panel_scroll.setWidget(panel)
        panel_scroll.setWidgetResizable(True)
        panel_scroll.setFrameShape(QFrame.Shape.NoFrame)
        panel_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        right = QVBoxLayout()             # Start and the banner never scroll away
        right.addLayout(buttons)
        right.addWidget(self.banner)
        right.addWidget(panel_scroll, 1)

        root = QHBoxLayout()
        root.addLayout(left, 3)
        root.addLayout(right, 2)
        central = QWidget()
        central.setLayout(root)
        self.setCentralWidget(central)
        screen = self.screen().availableGeometry()     # never larger than the screen it opens on
        self.resize(min(1180, screen.width()), min(720, screen.height()))

        self.start_button.clicked.connect(self._toggle_running)
        self.calibrate_button.clicked.connect(lambda: self.controller.calibrate())

    def _binding_rows(self) -> tuple[Binding, ...]:
        """Every setting a widget shows and edits. The OSC targets and the MIDI map are kept
        by their Apply buttons, which check the list as a whole."""
        strip = str.strip
        return (
            Binding("generation.prompt", self.prompt),
            Binding("generation.cfg", self.guidance),
            Binding("generation.temperature", self.temperature),
            Binding("generation.top_k", self.top_k),
            Binding("generation.chunk_seconds", self.chunk_seconds),
            Binding("generation.context_seconds", self.context_seconds),
            Binding("engine.kind", self.engine_kind),
            Binding("model.dir", self.model_dir, kept=strip),
            Binding("model.adaptor", self.adaptor_dir, kept=strip),
            Binding("model.precision", self.precision),
            Binding("camera.mirror_preview", self.mirror),
            Binding("camera.source", self.camera, kept=lambda text: text.strip() or "auto"),
            Binding("audio.device", self.audio_device, shown=lambda name: name or SYSTEM_DEFAULT,
                    kept=lambda text: "" if text == SYSTEM_DEFAULT else text.strip()),
            Binding("osc.targets", self.osc_targets),
            Binding("midi.enabled", self.midi_enabled),
            Binding("midi.port", self.midi_port, kept=strip),
            Binding("midi.virtual", self.midi_virtual),
            Binding("midi.channel", self.midi_channel),
            Binding("midi.map", self.midi_map),
            Binding("midi.note", self.midi_note),
            Binding("midi.clock", self.midi_clock),
            Binding("link.mode", self.link_mode),
        )

    def _build_play_tab(self) -> QWidget:
        self.prompt = QLineEdit()
        self.guidance = _spin(0.5)
        self.temperature = _spin(0.05)
        self.top_k = QSpinBox()
        self.top_k.setKeyboardTracking(False)
        self.chunk_seconds = _spin(0.1)
        self.context_seconds = _spin(0.5)
        self.preset_box = QComboBox()
        self.preset_box.setEditable(True)
        self.load_preset_button = QPushButton("Load")
        self.save_preset_button = QPushButton("Save preset")
        presets = QHBoxLayout()
        presets.addWidget(self.preset_box, 1)
        presets.addWidget(self.load_preset_button)
        presets.addWidget(self.save_preset_button)

        tab = QWidget()
        form = QFormLayout(tab)
        form.addRow("Prompt", self.prompt)
        form.addRow("Guidance (CFG)", self.guidance)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-k", self.top_k)
        form.addRow("Chunk (s, next start)", self.chunk_seconds)
        form.addRow("Context (s, next start)", self.context_seconds)
        form.addRow("Presets", presets)

        self.load_preset_button.clicked.connect(lambda: self.load_preset(self.preset_box.currentText().strip()))
        self.save_preset_button.clicked.connect(self._save_preset)
        return tab

    def _build_setup_tab(self) -> QWidget:
        self.engine_kind = QComboBox()
        self.model_dir = QLineEdit()
        self.adaptor_dir = QLineEdit()
        self.adaptor_dir.setPlaceholderText("none: tracked tempo and mood steer the prompt")
        self.precision = QComboBox()
        self.camera = QComboBox()
        self.camera.setEditable(True)
        self.audio_device = QComboBox()
        self.audio_device.setEditable(True)
        self.refresh_devices_button = QPushButton("Refresh devices")

        tab = QWidget()
        form = QFormLayout(tab)
        form.addRow("Engine", self.engine_kind)
        form.addRow("Model folder", self.model_dir)
        form.addRow("Adaptor folder", self.adaptor_dir)
        form.addRow("Precision", self.precision)
        form.addRow("Camera", self.camera)
        form.addRow("Audio output", self.audio_device)
        form.addRow("", self.refresh_devices_button)
        form.addRow(QLabel("Setup changes apply at the next Start."))

        self.refresh_devices_button.clicked.connect(self.refresh_devices)
        return tab

    def _build_osc_tab(self) -> QWidget:
        self.osc_targets = QPlainTextEdit()
        self.osc_targets.setPlaceholderText("one per line: 127.0.0.1:9000, faceosc@127.0.0.1, wekinator@127.0.0.1")
        self.osc_targets.setMaximumHeight(90)
        self.osc_apply = QPushButton("Apply")
        self.osc_state = QLabel()
        self.osc_state.setWordWrap(True)
        self.control_state = QLabel()
        tab = QWidget()
        form = QFormLayout(tab)
        form.addRow("Targets", self.osc_targets)
        form.addRow("", self.osc_apply)
        form.addRow("Out", self.osc_state)
        form.addRow("Control in", self.control_state)
        self.osc_apply.clicked.connect(lambda: self._apply_osc_targets(edited=True))
        return tab

    def _build_daw_tab(self) -> QWidget:
        self.midi_enabled = QCheckBox("MIDI out")
        self.midi_port = QLineEdit()
        self.midi_virtual = QCheckBox("Virtual port (else an existing one)")
        self.midi_channel = QSpinBox()
        self.midi_map = QPlainTextEdit()
        self.midi_map.setPlaceholderText("one per line: SIGNAL:CC or SIGNAL:CC/14, e.g. smile:22 (docs/midi.md)")
        self.midi_map.setMaximumHeight(90)
        self.midi_map_apply = QPushButton("Apply map")
        self.midi_note = QSpinBox()
        self.midi_note.setSpecialValueText("off")
        self.midi_clock = QCheckBox("MIDI clock at the music's tempo")
        self.link_mode = QComboBox()
        tab = QWidget()
        form = QFormLayout(tab)
        form.addRow(self.midi_enabled)
        form.addRow("Port", self.midi_port)
        form.addRow(self.midi_virtual)
        form.addRow("Channel", self.midi_channel)
        form.addRow("CC map", self.midi_map)
        form.addRow("", self.midi_map_apply)
        form.addRow("Note on mouth open", self.midi_note)
        form.addRow(self.midi_clock)
        form.addRow("Ableton Link", self.link_mode)
        note = QLabel("follow: the music takes the Link tempo and beat; conduct: your tempo leads. "
                      "Changes apply at the next Start.")
        note.setWordWrap(True)
        form.addRow(note)
        self.midi_map_apply.clicked.connect(self._set_midi_map)
        scroll = QScrollArea()          # the tab scrolls rather than making the window taller than a laptop screen
        scroll.setWidget(tab)
        scroll.setWidgetResizable(True)
        return scroll

    def _set_midi_map(self) -> None:
        """Keep a map only when every line parses; a bad line is named in the banner."""
        from ..outputs.midi import MidiError, parse_map

        lines = self.form.value("midi.map")
        try:
            parse_map(lines)
        except MidiError as err:
            self.show_banner(str(err))
            return
        if self._set("midi.map", lines):
            self.show_banner(f"MIDI map of {len(lines)} controllers kept; it applies at the next Start")

    def _load_settings_into_widgets(self) -> None:
        """Show the live settings and the presets there are."""
        self.form.show(self.settings)
        self.preset_box.clear()
        self.preset_box.addItems(self.controller.preset_names())

    def refresh_devices(self) -> None:
        """Fill the camera and audio pickers with what is plugged in now, by name."""
        cameras, outputs = ["auto"], [SYSTEM_DEFAULT]
        try:
            from ..capture.sources import list_cameras
            cameras += [camera.name for camera in list_cameras()]
        except Exception as err:      # no camera backend: the field stays editable
            log.warning("cannot list cameras: %s", err)
        try:
            from ..audio.output import output_devices
            outputs += [name for _, name in output_devices()]
        except Exception as err:      # no PortAudio: say so where the picker is
            log.warning("cannot list audio outputs: %s", err)
        for key, items in (("camera.source", cameras), ("audio.device", outputs)):
            box = self.form.widget(key)
            box.blockSignals(True)
            box.clear()
            box.addItems(dict.fromkeys(items))
            box.blockSignals(False)
            self.form.show(self.settings, key)

    # ---- settings ----------------------------------------------------------------------------
    def _set(self, key: str, value) -> bool:
        """Keep one setting in the controller; a bad value is reported in the banner and changes nothing."""
        try:
            after = self.controller.set(key, value)
        except SettingsError as err:
            self.show_banner(str(err))
            return False
        self._edited[key] = settings_mod.value_of(after, key)
        return True

    def load_preset(self, name: str) -> None:
        try:
            self.controller.load_preset(name)     # shown by _on_remote_change
        except PresetError as err:
            self.show_banner(str(err))

    def _on_remote_change(self, settings: Settings, preset: str) -> None:
        """The control port or a preset changed the live settings: show them."""
        self._load_settings_into_widgets()
        if preset:
            self.preset_box.setCurrentText(preset)
            self.show_banner(f"preset {preset} loaded")

    def _save_preset(self) -> None:
        name = self.preset_box.currentText().strip()
        try:
            path = self.controller.save_preset(name)
        except PresetError as err:
            self.show_banner(str(err))
            return
        self.preset_box.clear()
        self.preset_box.addItems(self.controller.preset_names())
        self.preset_box.setCurrentText(name)
        self.show_banner(f"saved {path}")

    def _apply_osc_targets(self, edited: bool = False) -> None:
        """Send to the targets in the box; `edited`: the performer pressed Apply (else they came with the settings)."""
        lines = self.form.value("osc.targets")
        try:
            targets = self.controller.set_targets(lines)
        except OscTargetError as err:
            self.osc_state.setText(f"not applied: {err}")
            return
        if edited:
            self._edited["osc.targets"] = lines
        self.osc_state.setText(", ".join(str(t) for t in targets) or "no targets")

    # ---- session ---------------------------------------------------------------------------
    def _connect_worker(self) -> None:
        worker = self._worker.worker
        self.start_session.connect(worker.start_session)
        self.stop_session.connect(worker.stop_session)
        worker.started.connect(self._on_started)
        worker.failed.connect(self._on_failed)
        worker.notice.connect(self.show_banner)
        worker.stopped.connect(self._on_stopped)
        worker.status.connect(self._on_status)
        worker.recorded.connect(lambda path: self.show_banner(f"performance saved: {path}"))
        worker.monitor.connect(self.stage.set_monitor)
        worker.chunk_started.connect(self.stage.plot.add_chunk)

    def _toggle_running(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self) -> None:
        if self.running or not self.start_button.isEnabled():
            return
        self.start_button.setEnabled(False)
        self.start_button.setText("Starting…")
        self.video.show_message("Opening the camera and loading the music engine…")
        settings, recorder = self.settings, None
        if self.record_performance.isChecked():
            folder = new_performance_folder(self.performances_dir)
            recorder = PerformanceRecorder(folder, self.settings.camera.fps, self.mirror.isChecked())
            settings = settings_mod.override(settings, {"audio.out": str(recorder.audio_path)})   # this run only
        self.start_session.emit(settings, recorder)

    def stop(self) -> None:
        """Ask the worker to stop and return at once; the controls come back when it reports `stopped`."""
        if self.running and self.start_button.isEnabled():
            self.start_button.setEnabled(False)
            self.start_button.setText("Stopping…")
            self.stop_session.emit()

    def _on_started(self, description: str) -> None:
        self.running = True
        self.start_button.setEnabled(True)
        self.start_button.setText("Stop")
        self.statusBar().showMessage(f"playing: {description}")

    def _on_failed(self, reason: str) -> None:
        self.running = False
        self.start_button.setEnabled(True)
        self.start_button.setText("Start")
        self.video.show_message(reason)
        self.show_banner(reason)

    def _on_stopped(self) -> None:
        self.running = False
        self.start_button.setEnabled(True)
        self.start_button.setText("Start")
        self.statusBar().showMessage("stopped")

    def _on_status(self, status: SessionStatus) -> None:
        self.last_status = status
        for key, _, fmt in READOUTS:
            value = getattr(status, key)
            if key == "dsp_latency" and value is not None:
                value *= 1000.0
            if key == "tempo" and not value:
                value = None                      # 0 BPM = no tempo tracked yet
            self.readouts[key].setText("–" if value is None else fmt.format(value))
        self.steering_label.setText(" ".join(status.steering_words) or "–")
        link = status.link
        self.link_label.setText("–" if link is None else (
            f"{link.mode}: {link.peers} peer{'' if link.peers == 1 else 's'}, {link.tempo:.1f} BPM, "
            f"beat {link.phase + 1:.2f} of {link.quantum:g}"))
        if status.recording_stopped:              # a full disk: the show goes on, the performer must know
            self.show_banner(status.recording_stopped)
        self.osc_state.setText(f"{', '.join(str(t) for t in self.sender.targets) or 'no targets'}; "
                               f"{self.sender.bundles_sent} bundles, {self.sender.send_errors} errors")
        if self.control is not None:
            counts = self.control.snapshot()
            self.control_state.setText(f"port {self.control.port}: " + (", ".join(
                f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing received"))

    def _show_preview(self) -> None:
        item = self._preview.take()
        if item is None:
            return
        frame, image = item
        if image is None:
            self.video.show_message("no camera image: features come from a tracking recording")
        else:
            self.video.show_image(draw_overlay(image, frame, mirror=self.mirror.isChecked()))
        values = dict(zip(EXPRESSION_NAMES, (float(v) for v in frame.expression)))
        values["motion_energy"] = float(frame.motion_energy)
        self.meters.set_values(values)
        self.stage.plot.add_frame(frame)

    def show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    # ---- teardown --------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop everything in order and save the performer's changes; safe to call twice."""
        for timer in (self._preview_timer, self._stage_timer):
            if timer.isActive():
                timer.stop()
        if self._worker is not None:
            if self._worker.shutdown():
                self._worker = None
            else:                    # kept referenced: Qt must not destroy a thread that still runs
                log.warning("the session worker did not stop in time")
        self.controller.close()
        if self.settings_path is not None and self._edited:
            try:
                settings_mod.save_changes(self.settings_path, self._edited)
            except OSError as err:     # a full disk: one line, and the window still closes
                print(f"expotion-live gui: your settings changes were not saved: {err}", file=sys.stderr)
            self._edited = {}

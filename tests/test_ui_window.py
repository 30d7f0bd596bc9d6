"""The real window, offscreen: settings in and out, OSC control in, targets editable live, and a
real session behind it: the demo face video as the camera, the synth (no MusicGen weights) or a
tiny MusicGen, PortAudio on a PulseAudio null sink, OSC out to a real python-osc server."""
from __future__ import annotations

import socket
import threading
import time
import tomllib

import numpy as np
import pytest
from PyQt6.QtCore import QTimer
from pythonosc.udp_client import SimpleUDPClient
from test_osc import Receiver, as_dict

from expotion_live import settings as settings_mod
from expotion_live.engine.source import GenerationParams
from expotion_live.outputs.osc.targets import OscTarget
from expotion_live.settings import Settings
from expotion_live.ui.overlay import CONTOUR_COLOUR


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(qapp, predicate, timeout: float = 10.0) -> bool:
    """Run the Qt event loop until `predicate()` holds (the GUI thread must keep turning)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        qapp.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def make_window(qapp, tmp_path):
    from expotion_live.ui.window import MainWindow

    made = []

    def make(**overrides):
        base = {"osc.control_port": free_port(), "osc.targets": ()}
        settings = settings_mod.override(Settings(), base | overrides)
        window = MainWindow(settings, tmp_path / "settings.toml", tmp_path / "presets", tmp_path / "performances")
        window.show()
        qapp.processEvents()
        made.append(window)
        return window

    yield make
    for window in made:
        window.close()


def test_window_shows_settings_and_saves_edits_on_close(make_window, tmp_path):
    window = make_window(**{"generation.prompt": "glassy arpeggios", "generation.cfg": 4.5})
    assert window.prompt.text() == "glassy arpeggios" and window.guidance.value() == 4.5
    assert window.start_button.text() == "Start" and window.video.isVisible()
    window.temperature.setValue(0.8)
    window.prompt.setText("slow strings")
    window.prompt.editingFinished.emit()
    window.mirror.setChecked(False)
    window.close()
    saved = tomllib.loads((tmp_path / "settings.toml").read_text())
    assert saved["generation"]["prompt"] == "slow strings"
    assert saved["generation"]["temperature"] == pytest.approx(0.8)
    assert saved["camera"]["mirror_preview"] is False
    assert settings_mod.load(tmp_path / "settings.toml").generation.prompt == "slow strings"


def test_osc_targets_are_editable_live_and_bad_lines_change_nothing(make_window):
    window = make_window(**{"osc.targets": ("127.0.0.1:9100",)})
    assert window.sender.targets == (OscTarget("127.0.0.1", 9100),)
    window.osc_targets.setPlainText("127.0.0.1:9200\nfaceosc@127.0.0.1")
    window.osc_apply.click()
    assert window.sender.targets == (OscTarget("127.0.0.1", 9200), OscTarget("127.0.0.1", 8338, "faceosc"))
    assert window.settings.osc.targets == ("127.0.0.1:9200", "faceosc@127.0.0.1")
    window.osc_targets.setPlainText("127.0.0.1:notaport")
    window.osc_apply.click()
    assert "not applied" in window.osc_state.text() and "notaport" in window.osc_state.text()
    assert len(window.sender.targets) == 2 and window.settings.osc.targets == ("127.0.0.1:9200", "faceosc@127.0.0.1")


def test_presets_save_and_load(make_window):
    window = make_window()
    window.guidance.setValue(6.0)
    window.preset_box.setCurrentText("loud")
    window.save_preset_button.click()
    window.guidance.setValue(2.0)
    window.load_preset("loud")
    assert window.guidance.value() == 6.0 and window.settings.generation.cfg == 6.0
    window.load_preset("../etc/passwd")
    assert "may hold letters" in window.banner.text()
    window.load_preset("missing")
    assert "no preset 'missing'" in window.banner.text() and window.settings.generation.cfg == 6.0


def test_osc_control_port_drives_the_window_and_counts_junk(make_window, qapp):
    window = make_window()
    (window.presets_dir).mkdir(parents=True, exist_ok=True)
    (window.presets_dir / "calm.toml").write_text('[generation]\ntemperature = 0.6\nprompt = "calm pads"\n')
    client = SimpleUDPClient("127.0.0.1", window.control.port)
    client.send_message("/expotion/prompt", "bright marimba")
    client.send_message("/expotion/guidance", 7.5)
    client.send_message("/expotion/temperature", "hot")         # malformed: ignored, counted
    client.send_message("/expotion/volume", 1.0)                # unknown: ignored, counted
    client.send_message("/expotion/preset", "nope")             # no such preset: failed, counted
    assert wait_until(qapp, lambda: window.prompt.text() == "bright marimba" and window.guidance.value() == 7.5)
    assert window.settings.generation.prompt == "bright marimba" and window.settings.generation.cfg == 7.5
    client.send_message("/expotion/preset", "calm")
    assert wait_until(qapp, lambda: window.prompt.text() == "calm pads")
    assert window.settings.generation.temperature == pytest.approx(0.6)
    assert wait_until(qapp, lambda: window.control.snapshot() == {"handled": 3, "malformed": 1, "unknown": 1,
                                                                   "failed": 1})


def test_control_port_in_use_is_shown_not_fatal(make_window):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        window = make_window(**{"osc.control_port": busy.getsockname()[1]})
        assert window.control is None and "control_port" in window.control_state.text()


@pytest.fixture
def receiver():
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture
def live_window(make_window, face_video, null_sink, receiver, tmp_path):
    def make(**overrides):
        return make_window(**{"camera.source": str(face_video), "audio.device": null_sink,
                              "model.dir": str(tmp_path / "no-weights"),
                              "osc.targets": (f"127.0.0.1:{receiver.port}",)} | overrides)
    return make


def as_array(widget) -> np.ndarray:
    """What a widget shows, as a BGR array."""
    image = widget.grab().toImage().convertToFormat(widget.grab().toImage().Format.Format_BGR888)
    data = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8)
    return data.reshape(image.height(), image.bytesPerLine())[:, :image.width() * 3].reshape(
        image.height(), image.width(), 3)


def session_of(window):
    return window._worker.worker._session


def test_window_tracks_the_face_video_plays_and_sends_osc_without_weights(live_window, qapp, receiver):
    window = live_window()
    window.start_button.click()
    assert wait_until(qapp, lambda: window.running and window.video.frames_shown >= 20
                      and window.last_status is not None and window.last_status.chunk_index >= 1, timeout=30), window.banner.text()
    # no MusicGen weights: the window says what to download, and the synth plays anyway
    assert "expotion-live download small" in window.banner.text()
    assert "synth" in window.statusBar().currentMessage() and window.start_button.text() == "Stop"
    # the preview shows the camera with the face mesh drawn on it
    shown = as_array(window.video)
    assert np.sum(np.all(np.abs(shown.astype(int) - CONTOUR_COLOUR) < 50, axis=2)) > 200
    # readouts and meters follow the session
    status = window.last_status
    assert status.tracking_fps > 5 and window.readouts["tracking_fps"].text().endswith("fps")
    assert window.readouts["rtf"].text().endswith("×") and window.readouts["underruns"].text().isdigit()
    assert max(window.meters.value(n) for n in window.meters.bars) > 0.05
    # OSC: one bundle per tracked frame, the face found, the music state
    packets = receiver.wait_for(20)
    assert sum(as_dict(p)["/face/found"] == [1.0] for p in packets) >= 0.9 * len(packets)
    assert wait_until(qapp, lambda: as_dict(receiver.packets[-1])["/music/playing"] == [1.0])
    assert as_dict(receiver.packets[-1])["/music/chunk"][0] >= 0
    window.start_button.click()
    assert wait_until(qapp, lambda: not window.running and window.start_button.text() == "Start")
    assert session_of(window) is None


def test_controls_change_the_engine(live_window, qapp):
    window = live_window(**{"engine.kind": "synth"})
    window.start()
    assert wait_until(qapp, lambda: window.running, timeout=20), window.banner.text()
    session = session_of(window)
    window.prompt.setText("dusty breakbeat")
    window.prompt.editingFinished.emit()
    window.guidance.setValue(5.5)
    window.temperature.setValue(0.7)
    window.top_k.setValue(50)
    expected = GenerationParams(prompt="dusty breakbeat", cfg=5.5, temperature=0.7, top_k=50, top_p=0.0)
    assert wait_until(qapp, lambda: session.scheduler.params == expected)
    # calibrate: the tracker takes the next frames with a face as the neutral face
    assert session.tracking.tracker.neutral is None
    window.calibrate_button.click()
    assert wait_until(qapp, lambda: session.tracking.tracker.neutral is not None, timeout=10)
    # setup changes wait for the next start and do not touch the running session
    started_with = session.settings.generation.chunk_seconds
    assert started_with != 2.0
    window.chunk_seconds.setValue(2.0)
    assert window.settings.generation.chunk_seconds == 2.0
    assert session.settings.generation.chunk_seconds == started_with


def window_in_a_held_render(live_window, qapp):
    """A playing window whose synth holds its third chunk, as a long MusicGen render does, until `release` is set."""
    from expotion_live.engine.synth import SynthSource

    rendering, release = threading.Event(), threading.Event()

    class SlowSynth(SynthSource):
        def render(self, request):
            if request.index == 2:
                rendering.set()
                release.wait()
            return super().render(request)

    window = live_window(**{"engine.kind": "synth"})
    window.controller.build_source = lambda settings: SlowSynth(sample_rate=settings.audio.sample_rate)
    window.start()
    assert wait_until(qapp, lambda: window.running and rendering.is_set(), timeout=30), window.banner.text()
    return window, release


def test_stop_returns_at_once_and_the_controls_come_back_when_the_worker_has_stopped(live_window, qapp):
    """Stopping waits for the chunk being rendered (the model cannot be interrupted): on the worker, never
    on the GUI thread, which goes on turning while the render holds the stop."""
    window, release = window_in_a_held_render(live_window, qapp)
    watchdog = threading.Timer(30.0, release.set)      # a GUI thread stuck in stop would be freed here, and fail
    watchdog.start()
    try:
        window.start_button.click()                    # stop while the render is held
        assert not release.is_set()                    # the click returned with the render still held
        assert window.start_button.text() == "Stopping…" and not window.start_button.isEnabled()
        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(1))
        timer.start(10)
        assert wait_until(qapp, lambda: len(ticks) >= 5) and window.running   # the GUI turns; the worker waits
        timer.stop()
        assert not release.is_set()
    finally:
        release.set()
        watchdog.cancel()
    assert wait_until(qapp, lambda: not window.running and window.start_button.isEnabled(), timeout=20)
    assert window.start_button.text() == "Start" and session_of(window) is None


def test_closing_during_a_held_render_waits_only_up_to_the_timeout(live_window, qapp):
    """Teardown: stop, quit, wait with a timeout; a render that holds on past it is left to finish."""
    window, release = window_in_a_held_render(live_window, qapp)
    worker = window._worker
    watchdog = threading.Timer(30.0, release.set)       # a teardown without a timeout would be freed here, and fail
    watchdog.start()
    try:
        assert worker.shutdown(timeout_ms=200) is False and not release.is_set()
    finally:
        release.set()
        watchdog.cancel()
    assert worker.thread.wait(20000)                     # the render ended: the stop and the quit ran after it
    assert session_of(window) is None


def test_the_window_keeps_turning_while_musicgen_loads(live_window, qapp, tiny_musicgen_dir):
    window = live_window(**{"engine.kind": "musicgen", "model.dir": str(tiny_musicgen_dir)})
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(window.running))
    timer.start(20)
    began = time.monotonic()
    window.start_button.click()
    assert window.start_button.text() == "Starting…" and not window.start_button.isEnabled()
    assert wait_until(qapp, lambda: window.running, timeout=60), window.banner.text()
    loading = time.monotonic() - began
    timer.stop()
    # The GUI thread ran its 20 ms timer through the load (at least half the ticks, up to 5);
    # a load on the GUI thread would leave at most one tick, however long it took.
    assert ticks.count(False) >= min(5, 0.5 * loading / 0.020), (ticks.count(False), loading)
    assert "MusicGen" in window.statusBar().currentMessage() and window.banner.text() == ""


def test_a_failed_start_is_reported_and_the_window_recovers(live_window, qapp, tmp_path):
    window = live_window(**{"camera.source": str(tmp_path / "missing.mp4"), "engine.kind": "synth"})
    window.start_button.click()
    assert wait_until(qapp, lambda: "missing.mp4" in window.banner.text(), timeout=20)
    assert not window.running and window.start_button.isEnabled() and window.start_button.text() == "Start"


def test_recording_a_performance_saves_the_overlay_video_with_the_played_audio(live_window, qapp):
    import json
    import subprocess

    import cv2

    window = live_window(**{"engine.kind": "synth"})
    window.record_performance.setChecked(True)
    window.mirror.setChecked(False)
    window.start()
    assert wait_until(qapp, lambda: window.running, timeout=20), window.banner.text()
    assert wait_until(qapp, lambda: window.last_status is not None and window.last_status.played_seconds >= 2.0, timeout=20)
    window.stop()
    assert wait_until(qapp, lambda: "performance saved" in window.banner.text(), timeout=30), window.banner.text()
    saved = window.banner.text().split(": ", 1)[1]
    assert saved.endswith("performance.mp4") and window.settings.audio.out == ""   # the WAV was this run's only
    streams = {s["codec_type"]: s for s in json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", saved],
        capture_output=True, check=True).stdout)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    video_seconds, audio_seconds = float(streams["video"]["duration"]), float(streams["audio"]["duration"])
    assert video_seconds >= 1.8 and abs(video_seconds - audio_seconds) < 0.3
    capture = cv2.VideoCapture(saved)
    capture.set(cv2.CAP_PROP_POS_FRAMES, 45)
    ok, image = capture.read()
    assert ok and np.sum(np.all(np.abs(image.astype(int) - CONTOUR_COLOUR) < 50, axis=2)) > 200


def test_ableton_target_from_settings_gets_tempo_and_transport(make_window, receiver):
    from expotion_live.outputs.osc.schema import MusicState
    from test_osc import tracked_frame

    window = make_window(**{"osc.ableton": f"127.0.0.1:{receiver.port}"})
    window.sender.set_music(MusicState(playing=True, tempo=128.0))
    window.sender.send_frame(tracked_frame(), (640, 480))
    messages = [m for p in receiver.wait_for(2) for m in p]
    assert ("/live/song/set/tempo", [128.0]) in messages and ("/live/song/start_playing", []) in messages
    bad = make_window(**{"osc.ableton": "no-such-host.invalid:11000"})   # well formed, but no packet arrives
    assert "[osc] ableton" in bad.banner.text() and bad.sender.targets == ()


def test_the_window_and_osc_control_take_their_ranges_from_the_settings(make_window):
    from expotion_live.outputs.osc.control import COMMANDS
    from expotion_live.settings import RANGES

    window = make_window()
    widgets = {"generation.cfg": window.guidance, "generation.temperature": window.temperature,
               "generation.top_k": window.top_k, "generation.chunk_seconds": window.chunk_seconds,
               "generation.context_seconds": window.context_seconds, "midi.channel": window.midi_channel,
               "midi.note": window.midi_note}
    assert {key: (w.minimum(), w.maximum()) for key, w in widgets.items()} == {key: RANGES[key] for key in widgets}
    assert COMMANDS["/expotion/guidance"][2] == RANGES["generation.cfg"]
    assert COMMANDS["/expotion/temperature"][2] == RANGES["generation.temperature"]


def test_window_fits_a_1280x720_screen_with_the_banner_showing(make_window, qapp):
    window = make_window()
    window.banner.setText("no sound card: no audio output device found (no sound card, and no PulseAudio/ALSA "
                          "device); nothing is heard (tick 'Record the performance' to keep what is played)")
    window.banner.show()
    qapp.processEvents()
    hint = window.minimumSizeHint()
    assert hint.width() <= 1280 and hint.height() <= 720 - 48, hint      # room for a title bar and a panel
    assert window.width() <= window.screen().availableGeometry().width()


def test_the_pickers_offer_exactly_the_settings_choices(make_window):
    from expotion_live.settings import CHOICES

    window = make_window()
    pickers = {"model.precision": window.precision, "engine.kind": window.engine_kind, "link.mode": window.link_mode}
    assert {key: tuple(box.itemText(i) for i in range(box.count())) for key, box in pickers.items()} == {
        key: CHOICES[key] for key in pickers}


def test_every_bound_widget_shows_its_setting_and_keeps_the_performers_edit(make_window, tmp_path):
    from expotion_live.ui.window import SYSTEM_DEFAULT

    shown = {"model.precision": "int4", "engine.kind": "synth", "link.mode": "conduct", "midi.channel": 5,
             "midi.note": 60, "midi.enabled": True, "midi.port": "Loop", "midi.map": ("smile:22", "jaw:27/14"),
             "model.adaptor": "runs/me/best", "camera.source": "take.mp4", "audio.device": "",
             "camera.mirror_preview": False, "osc.targets": ("faceosc@127.0.0.1",)}
    window = make_window(**shown)
    assert {key: window.form.value(key) for key in window.form.rows} == {
        key: settings_mod.value_of(window.settings, key) for key in window.form.rows}
    assert window.precision.currentText() == "int4" and window.audio_device.currentText() == SYSTEM_DEFAULT
    assert window.midi_map.toPlainText() == "smile:22\njaw:27/14"
    window.precision.setCurrentText("bf16")
    window.link_mode.setCurrentText("follow")
    window.midi_channel.setValue(9)
    window.midi_port.setText("  Other port ")
    window.midi_port.editingFinished.emit()
    window.camera.setCurrentText(" ")
    window.audio_device.setCurrentText(" Null Output ")
    assert window.settings.audio.device == "Null Output"
    window.audio_device.setCurrentText(SYSTEM_DEFAULT)
    edited = {"model.precision": "bf16", "link.mode": "follow", "midi.channel": 9, "midi.port": "Other port",
              "camera.source": "auto", "audio.device": ""}
    assert {key: settings_mod.value_of(window.settings, key) for key in edited} == edited
    window.close()
    saved = tomllib.loads((tmp_path / "settings.toml").read_text())
    assert {key: saved[key.split(".")[0]][key.split(".")[1]] for key in edited} == edited

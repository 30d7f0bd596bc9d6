"""The stage view: the played audio's monitor, the meter and spectrogram on known signals, and the
real window offscreen with the views running on a live session (saved as a screenshot)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from expotion_live.audio.monitor import AudioMonitor
from expotion_live.ui.stage import FFT_SIZE, SPECTRUM_ROWS, StageView
from test_ui_window import as_array, live_window, make_window, receiver, session_of, wait_until  # noqa: F401

SR = 32000


def test_monitor_keeps_the_newest_samples_across_the_wrap():
    monitor = AudioMonitor(1000)
    assert not monitor.latest(300).any()                         # nothing played yet: silence
    blocks = [np.full(512, i + 1, np.float32) for i in range(5)]
    for block in blocks:
        monitor.push(block, 0.5)
    np.testing.assert_array_equal(monitor.latest(1000), np.concatenate(blocks)[-1000:])
    assert monitor.written == 2560 and monitor.clips == 0
    monitor.push(np.ones(512, np.float32), 1.0)
    assert monitor.clips == 1


def test_meter_and_spectrogram_read_a_known_tone(qapp):
    view = StageView(SR)
    monitor = AudioMonitor(2 * SR)
    view.set_monitor(monitor)
    t = np.arange(SR // 4) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    for start in range(0, len(tone), 512):
        monitor.push(tone[start:start + 512], 0.5)
    view.refresh()
    assert view.meter.rms_db == pytest.approx(-9.03, abs=0.1) and view.meter.peak_db == pytest.approx(-6.02, abs=0.1)
    assert not view.meter.clipping
    column = view.spectrogram.pixels[::-1, -1]                   # lowest frequency first
    edges = np.geomspace(40.0, SR / 2, SPECTRUM_ROWS + 1)
    assert edges[int(np.argmax(column))] <= 1000.0 < edges[int(np.argmax(column)) + 2]
    monitor.push(np.ones(512, np.float32), 1.0)                  # one clipped block lights the clip light
    view.refresh()
    assert view.meter.clipping and view.meter.peak_db == pytest.approx(0.0, abs=0.01)
    assert len(view.spectrogram.pixels[0]) > FFT_SIZE // 8


def test_window_stage_view_follows_a_live_session(live_window, qapp, tmp_path):
    window = live_window(**{"engine.kind": "synth"})
    window.resize(1280, 800)
    window.start_button.click()
    assert wait_until(qapp, lambda: window.running and window.last_status is not None and window.last_status.chunk_index >= 3, timeout=40), \
        window.banner.text()
    assert wait_until(qapp, lambda: window.stage.meter.rms_db > -50, timeout=10)
    stage = window.stage
    assert stage.monitor is session_of(window).monitor
    assert stage.spectrogram.pixels[:, -20:].max() > 100            # the synth's spectrum scrolls in
    assert wait_until(qapp, lambda: len(stage.plot._frames) > 20 and len(stage.plot._chunks) >= 2, timeout=10)
    assert window.link_label.text() == "–"                            # Link off
    shot = tmp_path / "stage.png"
    assert window.grab().save(str(shot))
    if os.environ.get("EXPOTION_SCREENSHOTS"):                        # keep it to look at
        window.grab().save(os.path.join(os.environ["EXPOTION_SCREENSHOTS"], "stage.png"))
    shown = as_array(stage.spectrogram)
    assert shown.std() > 10                                           # a picture, not a flat fill
    window.start_button.click()
    assert wait_until(qapp, lambda: not window.running)
    assert stage.monitor is None


def test_midi_and_link_settings_from_the_window(make_window):
    window = make_window()
    window.midi_enabled.setChecked(True)
    window.midi_map.setPlainText("smile:22\nyaw:1/14")
    window.midi_map_apply.click()
    assert window.settings.midi.enabled and window.settings.midi.map == ("smile:22", "yaw:1/14")
    window.midi_map.setPlainText("smile:22\ngrin:23")
    window.midi_map_apply.click()
    assert "grin:23" in window.banner.text() and window.settings.midi.map == ("smile:22", "yaw:1/14")
    window.link_mode.setCurrentText("conduct")
    window.midi_note.setValue(60)
    assert window.settings.link.mode == "conduct" and window.settings.midi.note == 60


def test_link_readout_shows_mode_peers_tempo_and_beat(make_window, qapp):
    import dataclasses

    from expotion_live.engine.synth import SynthSource
    from expotion_live.features.schema import FeatureFrame
    from expotion_live.live.session import LiveSession
    from expotion_live.outputs.ableton_link import LinkStatus

    window = make_window()
    idle = LiveSession(window.settings, SynthSource(), [FeatureFrame(t=0.0)], output="file").status()
    link = LinkStatus(mode="follow", peers=2, tempo=120.0, beat=17.5, phase=1.5, quantum=4.0)
    window._worker.worker.status.emit(dataclasses.replace(idle, link=link))   # as the worker's poll sends it
    assert wait_until(qapp, lambda: window.link_label.text() == "follow: 2 peers, 120.0 BPM, beat 2.50 of 4")

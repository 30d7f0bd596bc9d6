"""JACK as a rig, for real: the music (32 kHz) plays into a 48 kHz JACK server and a JACK client reads it back.

Also the devices a 48 kHz JACK server gives PortAudio (ALSA's `jack` plugin, the JACK host
API), which refused the music's rate; and a server killed mid-run (the file sink takes over).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from expotion_live.audio.dsp import DspPath
from expotion_live.audio.output import AudioDeviceError, AudioStream, BlockPlayer, WavRecorder, open_output
from expotion_live.audio.ring_buffer import RingBuffer
from expotion_live.engine.scheduler import ChunkScheduler
from expotion_live.settings import Settings, override
from conftest import JACK_RATE, REPO
from test_engine_scheduler import BLOCK, PARAMS, SR, ToneSource, blank_window, timing

TONE_HZ = 220.0   # ToneSource's tone, amplitude 0.5


class JackReader:
    """A JACK client that records everything arriving at its one input port, `reader:in`."""

    def __init__(self):
        import jack

        self.client = jack.Client("reader", no_start_server=True)
        self.port = self.client.inports.register("in")
        self.blocks: list[np.ndarray] = []
        self.client.set_process_callback(lambda frames: self.blocks.append(self.port.get_array().copy()))
        self.client.activate()

    def connect_from(self, port: str) -> None:
        self.client.connect(port, self.port)

    def signal(self) -> np.ndarray:
        """What arrived, from the first sound on."""
        got = np.concatenate(self.blocks)
        return got[int(np.argmax(np.abs(got) > 1e-3)):]

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def clean_windows(sound: np.ndarray, rate: int) -> np.ndarray:
    """Per quarter second: is it exactly a 220 Hz sine of amplitude 0.5 (fitted: it was resampled)?"""
    n = rate // 4
    t = np.arange(n) / rate
    basis = np.stack([np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t)], axis=1)
    clean = []
    for start in range(0, len(sound) - n + 1, n):
        window = sound[start:start + n]
        coef, *_ = np.linalg.lstsq(basis, window, rcond=None)
        clean.append(abs(np.hypot(*coef) - 0.5) < 1e-3 and np.max(np.abs(window - basis @ coef)) < 2e-3)
    return np.array(clean)


def assert_is_the_tone(sound: np.ndarray, rate: int, seconds: float, least_clean: float = 1.0) -> None:
    """`sound` is an unbroken 220 Hz sine of amplitude 0.5: no gap, click or alias in any window
    (`least_clean` < 1 where an xrun nobody reports, PortAudio's on a loaded machine, may cut one)."""
    sound = sound[rate // 10:round(seconds * rate)]          # past the first sound's soft start
    assert len(sound) >= round((seconds - 0.2) * rate), "less sound arrived than was played"
    clean = clean_windows(sound, rate)
    assert clean.mean() >= least_clean, clean


def play_tone(output, player: BlockPlayer, seconds: float) -> ChunkScheduler:
    """Feed `player`'s ring from the ToneSource and play `seconds` on `output`."""
    scheduler = ChunkScheduler(ToneSource(), player.ring, blank_window, PARAMS, timing(), realtime=True,
                               min_lead_seconds=0.3 + output.latency_seconds,
                               low_water_seconds=0.1 + output.latency_seconds)
    player.start_samples = scheduler.low_water
    scheduler.start()
    output.start()
    while player.blocks_played * BLOCK < seconds * SR and scheduler.error is None:
        time.sleep(0.02)
    return scheduler


def jack_audio(**values):
    return override(Settings(), {"audio.api": "jack", **{f"audio.{k}": v for k, v in values.items()}}).audio


def test_jack_output_plays_into_ports_by_name_and_is_read_back(jack_server):
    in_a_fresh_process("jack_output_is_read_back()")


def jack_output_is_read_back() -> None:
    reader = JackReader()
    player = BlockPlayer(RingBuffer(4 * SR), DspPath(SR, BLOCK, enabled=False))
    try:
        output, _ = open_output(player, jack_audio(jack_ports=("reader:in",)), "device")
        assert output.device_name == "JACK expotion-live:out -> reader:in"
        scheduler = play_tone(output, player, 2.0)
        connections = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True).stdout
        output.stop()
        scheduler.stop()
    finally:
        reader.close()
    assert scheduler.error is None and output.failure == "" and output.dropped_samples == 0
    assert player.ring.underrun_blocks == 0
    assert "expotion-live:out\n   reader:in" in connections           # JACK's own view of the routing
    assert_is_the_tone(reader.signal(), JACK_RATE, 1.5)                  # 32 kHz music, 48 kHz server


def test_a_jack_port_that_does_not_exist_is_one_line_naming_the_ports(jack_server):
    in_a_fresh_process("a_missing_port_is_named()")


def a_missing_port_is_named() -> None:
    player = BlockPlayer(RingBuffer(SR), DspPath(SR, BLOCK))
    with pytest.raises(AudioDeviceError, match="no JACK input port 'mixer:in_7'.*system:playback_1"):
        open_output(player, jack_audio(jack_ports=("mixer:in_7",)), "auto")


def in_a_fresh_process(call: str) -> None:
    """Run `call` (a function of this module) in a new Python: PortAudio lists devices once, at
    initialisation, and libjack's threads in the test process crash it in later tests."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    done = subprocess.run([sys.executable, "-c", f"import test_audio_jack as t; t.{call}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("device", ["jack", "system"])   # ALSA's jack plugin (the default), JACK's host API
def test_portaudio_devices_of_a_48k_jack_server_play_the_music_resampled(jack_server, device):
    # Issue 27: both refused 32 kHz ("Invalid sample rate") and nothing played.
    in_a_fresh_process(f"portaudio_device_plays_the_tone({device!r})")


def portaudio_device_plays_the_tone(device: str) -> None:
    reader = JackReader()
    player = BlockPlayer(RingBuffer(4 * SR), DspPath(SR, BLOCK, enabled=False))
    try:
        before = {p.name for p in reader.client.get_ports(is_audio=True, is_output=True)}
        stream = AudioStream(player, device, SR, BLOCK)
        assert stream.sample_rate == JACK_RATE
        scheduler = ChunkScheduler(ToneSource(), player.ring, blank_window, PARAMS, timing(), realtime=True,
                                   min_lead_seconds=0.3 + stream.latency_seconds,
                                   low_water_seconds=0.1 + stream.latency_seconds)
        player.start_samples = scheduler.low_water
        scheduler.start()
        stream.start()
        time.sleep(0.3)
        new = {p.name for p in reader.client.get_ports(is_audio=True, is_output=True)} - before
        assert len(new) >= 1, "PortAudio's stream registered no JACK port"
        reader.connect_from(sorted(new)[0])
        start = player.blocks_played
        while (player.blocks_played - start) * BLOCK < 2 * SR and scheduler.error is None:
            time.sleep(0.02)
        stream.stop()
        scheduler.stop()
    finally:
        reader.close()
    assert scheduler.error is None and stream.feed.underflows == 0
    assert_is_the_tone(reader.signal(), JACK_RATE, 1.5, least_clean=0.8)


@pytest.fixture
def doomed_jack():
    """A JACK server of this test's own at 48 kHz, for the test to kill (never the shared one)."""
    from conftest import clear_stale_jack

    clear_stale_jack()
    name = f"expotion-doomed-{os.getpid()}"
    server = subprocess.Popen(["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", str(JACK_RATE), "-p", "256"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=dict(os.environ, JACK_NO_AUDIO_RESERVATION="1"))
    for _ in range(100):
        if subprocess.run(["jack_lsp", "-s", name], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        server.kill()
        pytest.fail(f"the JACK dummy server did not start within 10 s: {server.communicate()[1][-300:]}")
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    yield server
    if previous is None:
        os.environ.pop("JACK_DEFAULT_SERVER")
    else:
        os.environ["JACK_DEFAULT_SERVER"] = previous
    server.kill()
    server.wait()


def test_a_jack_server_killed_mid_run_hands_over_to_the_file_sink_at_once_and_the_file_has_no_gap(
        doomed_jack, tmp_path):
    # in a fresh process: libjack's threads of a client whose server died crash a process later
    in_a_fresh_process(f"the_file_sink_takes_over_from_jack({doomed_jack.pid}, {str(tmp_path)!r})")


def the_file_sink_takes_over_from_jack(server_pid: int, folder: str) -> None:
    from pathlib import Path

    tmp_path = Path(folder)
    player = BlockPlayer(RingBuffer(4 * SR), DspPath(SR, BLOCK, enabled=False))
    recorder = WavRecorder(tmp_path / "show.wav", SR)
    player.tap = recorder
    output, _ = open_output(player, jack_audio(out=str(tmp_path / "show.wav")), "auto")
    scheduler = play_tone(output, player, 1.0)
    os.kill(server_pid, signal.SIGTERM)   # SIGKILL would leave its shared memory behind
    killed = time.monotonic()
    while not output.failure and time.monotonic() - killed < 5:
        time.sleep(0.005)
    noticed = time.monotonic() - killed
    before = player.blocks_played
    time.sleep(1.0)
    after = player.blocks_played
    output.stop()
    scheduler.stop()
    recorder.close()
    assert noticed < 1.0
    assert output.failure.startswith("audio output 'JACK expotion-live:out -> system:playback_1, system:playback_2' "
                                     "failed at ") and "the JACK server shut down" in output.failure
    assert output.failure.endswith(f"writing {tmp_path / 'show.wav'} goes on")
    assert (after - before) * BLOCK / SR == pytest.approx(1.0, abs=0.15)    # the file sink plays on in real time
    played, _ = sf.read(tmp_path / "show.wav", dtype="float32")
    assert len(played) == player.blocks_played * BLOCK and recorder.dropped_samples == 0
    assert_is_the_tone(played[int(np.argmax(np.abs(played) > 1e-4)):], SR, len(played) / SR - 0.2)
    os._exit(0)                   # no teardown of the dead server's client


def test_doctor_opens_the_device_it_would_use_and_says_its_rate(jack_server):
    in_a_fresh_process("doctor_says_the_rate_jack_plays_at()")


def doctor_says_the_rate_jack_plays_at() -> None:
    from expotion_live.doctor import check_audio

    [check] = check_audio(override(Settings(), {"audio.device": "jack"}))
    assert check.ok and check.detail.startswith("plays: jack at 48000 Hz, resampled from 32000 Hz; have: ")
    [check] = check_audio(override(Settings(), {"audio.api": "jack", "audio.jack_ports": ("nowhere:in",)}))
    assert not check.ok and "no JACK input port 'nowhere:in'" in check.detail


def test_the_window_says_a_device_lost_mid_show_in_its_banner_and_plays_on(doomed_jack, face_video, tmp_path):
    # in a fresh process, as above; the window runs offscreen there
    in_a_fresh_process(f"the_window_banner_says_jack_died({doomed_jack.pid}, {str(face_video)!r}, {str(tmp_path)!r})")


def the_window_banner_says_jack_died(server_pid: int, video: str, folder: str) -> None:
    from pathlib import Path

    from PyQt6.QtWidgets import QApplication

    from expotion_live.ui.window import MainWindow
    from test_ui_window import wait_until

    app = QApplication.instance() or QApplication([])
    tmp_path = Path(folder)
    settings = override(Settings(), {"audio.api": "jack", "camera.source": video, "engine.kind": "synth",
                                     "osc.targets": (), "osc.control_port": 0})
    window = MainWindow(settings, tmp_path / "settings.toml", tmp_path / "presets", tmp_path / "performances")
    window.show()

    window.start_button.click()
    assert wait_until(app, lambda: window.running and window.last_status is not None
                      and window.last_status.played_seconds > 0.5, 40), window.banner.text()
    os.kill(server_pid, signal.SIGTERM)
    killed = time.monotonic()
    assert wait_until(app, lambda: "failed at" in window.banner.text(), 5), window.banner.text()
    said_after = time.monotonic() - killed
    played = window.last_status.played_seconds
    assert wait_until(app, lambda: window.last_status.played_seconds > played + 1.0, 5)   # the show goes on
    text = window.banner.text()
    assert said_after < 1.5 and "the JACK server shut down" in text and window.banner.isVisible(), text
    assert "--out" not in text                            # advice for the window, not for `run`
    os._exit(0)                   # no teardown of the dead server's client

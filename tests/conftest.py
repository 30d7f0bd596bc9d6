"""Shared fixtures: real components at tiny sizes (docs/architecture.md, Tests and benchmarks).

- `tiny_musicgen_dir`: a small random MusicGen (decoder + EnCodec + T5 + tokenizer)
  saved in the transformers on-disk format, built once per session.
- `face_video`: the bundled demo video of a real face that MediaPipe tracks.
- `null_sink`: a PulseAudio null sink, so PortAudio has a real output device.
- `jack_server`: a JACK server on the dummy driver (no sound card) under a private name,
  for JACK audio and JACK MIDI read back by JACK's own tools.
- `qapp`: a QApplication on the offscreen platform.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_musicgen_dir(tmp_path_factory) -> Path:
    from expotion_live.testing.random_musicgen import save_random_musicgen

    return save_random_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def face_video() -> Path:
    path = REPO / "assets" / "demo_face.mp4"
    assert path.exists(), "assets/demo_face.mp4 is missing: run python -m expotion_live.testing.face_video"
    return path


def _pulse_running() -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True).returncode == 0


def start_null_sink() -> None:
    """A PulseAudio daemon with a null sink: PortAudio's "pulse" device with no sound card.

    Started when pytest configures, before anything imports sounddevice, because PortAudio
    lists devices once when it initialises.
    """
    if shutil.which("pulseaudio") is None:
        return
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # one fixed place, so every test run finds the daemon an earlier run started
        runtime = Path(tempfile.gettempdir()) / f"expotion-live-xdg-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    if _pulse_running():
        return
    subprocess.run(["pulseaudio", "--daemonize", "--exit-idle-time=-1", "-n",
                    "--load=module-null-sink", "--load=module-native-protocol-unix"],
                   capture_output=True, env=os.environ)
    for _ in range(50):
        if _pulse_running():
            return
        time.sleep(0.1)


def pytest_configure(config):
    start_null_sink()


@pytest.fixture(scope="session")
def null_sink() -> str:
    """The PortAudio device name of the PulseAudio null sink."""
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed: run bash scripts/install --test")
    assert _pulse_running(), "the PulseAudio null sink did not start (see tests/conftest.py)"
    return "pulse"


JACK_SERVER = f"expotion-test-{os.getpid()}"   # private: never a performer's running server
LOOPBACK_ONLY = "ip link set lo up && ip route add 224.0.0.0/4 dev lo"   # multicast (Link's discovery) on lo


def in_loopback_namespace(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `argv` in a fresh network namespace that holds only loopback (`unshare -n`), so Ableton
    Link's packets never reach a real network; skips the test where no such namespace can be made."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is not installed: Link needs a private network namespace here")
    probe = subprocess.run(["unshare", "-n", "sh", "-c", LOOPBACK_ONLY], capture_output=True, text=True)
    if probe.returncode != 0:
        why = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit {probe.returncode}"
        pytest.skip(f"cannot make a loopback-only network namespace (unshare -n needs root or user namespaces): {why}")
    return subprocess.run(["unshare", "-n", "sh", "-c", f'{LOOPBACK_ONLY} && exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=timeout)


JACK_RATE = 48000                              # an audio interface's usual rate, not the model's 32 kHz


def clear_stale_jack() -> None:
    """Forget JACK servers that died uncleanly, when no JACK server runs at all.

    JACK keeps a few server slots in shared memory (/dev/shm) and never frees the slot of a
    server killed under its name, so killed test servers would use them all up over runs
    ("Too many servers already active"). With no jackd alive nothing uses them.
    """
    if subprocess.run(["pgrep", "-x", "jackd"], capture_output=True).returncode == 0:
        return
    for path in Path("/dev/shm").glob("jack*"):
        if path.stat().st_uid != os.getuid():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def jack_server():
    """The name of a JACK server on the dummy driver at JACK_RATE, started for one test module (the
    tests after it must not find a JACK server: PortAudio would offer its devices as a sound card).

    JACK clients find it through JACK_DEFAULT_SERVER, which is set while it runs.
    """
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed: run bash scripts/install --test")
    clear_stale_jack()
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    server = subprocess.Popen(["jackd", "--no-realtime", "-n", JACK_SERVER, "-d", "dummy",
                               "-r", str(JACK_RATE), "-p", "256"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = JACK_SERVER
    try:
        for _ in range(100):
            if subprocess.run(["jack_lsp", "-s", JACK_SERVER], capture_output=True).returncode == 0:
                break
            if server.poll() is not None:
                pytest.fail(f"jackd exited: {server.stderr.read().decode(errors='replace')[-500:]}")
            time.sleep(0.1)
        else:
            pytest.fail("the JACK dummy server did not start within 10 s")
        yield JACK_SERVER
    finally:
        if previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = previous
        sounddevice = sys.modules.get("sounddevice")
        if sounddevice is not None:   # PortAudio leaves JACK while it runs: its exit asserts on a gone server
            sounddevice._terminate()
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
        if sounddevice is not None:   # and lists the devices again, without JACK's, for the tests after
            sounddevice._initialize()


@pytest.fixture(scope="session")
def qapp():
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    yield app

"""Shared fixtures: real components at tiny sizes (see DESIGN.md §7 for the environment).

- `tiny_musicgen_dir`: a small random MusicGen (decoder + EnCodec + T5 + tokenizer)
  saved in the transformers on-disk format, built once per session.
- `face_video`: the bundled demo video of a real face that MediaPipe tracks.
- `null_sink`: a PulseAudio null sink, so PortAudio has a real output device.
- `qapp`: a QApplication on the offscreen platform.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_musicgen_dir(tmp_path_factory) -> Path:
    from expotion_live.model.random_init import save_random_musicgen

    return save_random_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def face_video() -> Path:
    path = REPO / "assets" / "demo_face.mp4"
    assert path.exists(), "assets/demo_face.mp4 is missing: run python -m expotion_live.capture.demo"
    return path


def _pulse_running(env) -> bool:
    return subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def null_sink(tmp_path_factory) -> str:
    """Start (or reuse) a PulseAudio daemon with a null sink; return the PortAudio device name."""
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed: run .ci/run or apt-get install pulseaudio libasound2-plugins")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or str(tmp_path_factory.mktemp("xdg"))
    os.environ["XDG_RUNTIME_DIR"] = runtime
    if not _pulse_running(os.environ):
        subprocess.run(["pulseaudio", "--daemonize", "--exit-idle-time=-1", "-n",
                        "--load=module-null-sink", "--load=module-native-protocol-unix"],
                       check=True, env=os.environ)
        for _ in range(50):
            if _pulse_running(os.environ):
                break
            time.sleep(0.1)
    return "pulse"


@pytest.fixture(scope="session")
def qapp():
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    yield app

"""A quiet start: the libraries' native logs go to the log file, the app's own lines to stderr (real commands)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what MediaPipe's C++ (LiteRT, absl) and ALSA's library write to fd 2 on their own
THIRD_PARTY = re.compile(r"^(INFO: |WARNING: |W0000 |I0000 |E0000 |ALSA lib |.*Sparsity tensors)")


def command(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("DISPLAY", None)
    result = subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    return result, tmp_path / "state" / "expotion-live" / "native.log"


def test_headless_run_prints_only_its_own_lines_and_keeps_native_logs_in_the_file(tmp_path, face_video):
    args = ("run", "--headless", "--video", str(face_video), "--engine", "synth", "--file-only",
            "--out", str(tmp_path / "show.wav"), "--duration", "1")
    result, log = command(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    noise = [line for line in result.stderr.splitlines() if THIRD_PARTY.match(line)]
    assert noise == [] and "played 1.0 s" in result.stderr
    assert any(THIRD_PARTY.match(line) for line in log.read_text().splitlines())    # MediaPipe did speak
    verbose, _ = command(tmp_path, "--verbose", *args)
    assert verbose.returncode == 0 and any(THIRD_PARTY.match(line) for line in verbose.stderr.splitlines())


def test_doctor_prints_only_its_own_lines(tmp_path):
    result, log = command(tmp_path, "doctor")
    noise = [line for line in (result.stdout + result.stderr).splitlines() if THIRD_PARTY.match(line)]
    assert noise == [] and "trackers" in result.stdout
    assert any(THIRD_PARTY.match(line) for line in log.read_text().splitlines())

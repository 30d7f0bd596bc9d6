"""Audio that fails mid-show (issue 26), through the headless run as a performer starts it.

A stopped process (kill -STOP) stalls the file sink: it is counted and said, with no
catch-up burst (that emptied the ring, left a hole in the file and lost samples). A JACK
server stopped under a run on PortAudio's JACK device: one line within a second, the file
sink plays on, the run ends on time with the whole recording.
"""
import os
import signal
import subprocess
import sys
import time

import soundfile as sf

from conftest import REPO
from test_audio_jack import doomed_jack  # noqa: F401 (a fixture)

SR = 32000


def headless(face_video, out, *flags) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "expotion_live.cli", "run", "--headless", "--engine", "synth",
         "--video", str(face_video), "--out", str(out), *flags],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ)


def lines_until(run: subprocess.Popen, start: str) -> list[str]:
    """stderr lines up to and including the first that starts with `start` (the run is playing)."""
    seen = []
    for line in run.stderr:
        seen.append(line.rstrip("\n"))
        if line.startswith(start):
            return seen
    raise AssertionError(f"the run ended before {start!r}: {seen[-5:]}")


def test_a_stopped_process_is_one_counted_stall_and_the_file_holds_what_played(face_video, tmp_path):
    out = tmp_path / "show.wav"
    run = headless(face_video, out, "--file-only", "--duration", "6")
    lines_until(run, "expotion-live run: SynthSource -> file")
    time.sleep(1.5)
    run.send_signal(signal.SIGSTOP)
    time.sleep(2.0)
    run.send_signal(signal.SIGCONT)
    err = run.stderr.read().splitlines()
    assert run.wait(timeout=60) == 0, err[-5:]
    summary = next(line for line in err if line.startswith("played "))
    assert summary.startswith("played 6.0 s")
    assert "underruns 0 (0.00 s of silence)" in summary and "stalls 1 (2." in summary
    assert len(sf.read(out)[0]) == 6 * SR            # exactly what the summary says was played


def test_a_jack_server_stopped_under_a_portaudio_run_is_said_at_once_and_the_run_ends_with_its_file(
        face_video, tmp_path, doomed_jack):  # noqa: F811
    out = tmp_path / "show.wav"
    run = headless(face_video, out, "--audio-output", "system", "--duration", "5")
    lines_until(run, "expotion-live run: SynthSource -> system")
    time.sleep(1.0)
    doomed_jack.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    failure = lines_until(run, "expotion-live run: audio output 'system' failed at ")[-1]
    said_after = time.monotonic() - stopped
    err = run.stderr.read().splitlines()
    assert run.wait(timeout=60) == 0, err[-5:]
    assert said_after < 1.0
    assert failure.endswith(f"writing {out} goes on")
    assert next(line for line in err if line.startswith("played ")).startswith("played 5.0 s")
    assert len(sf.read(out)[0]) == 5 * SR

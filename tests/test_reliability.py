"""Nothing lost, nothing cryptic (issue 16): signals, full disks, impossible numbers, damaged inputs.

Each test drives the real program: real subprocesses killed by real signals, a real tmpfs
filled to the last byte, real UDP packets, real MediaPipe on real (damaged) video files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from expotion_live import cli
from expotion_live.commands import run as run_mod
from expotion_live.atomic import AtomicFile
from expotion_live.audio.output import WavRecorder
from expotion_live.engine import offline
from expotion_live.engine.scheduler import ChunkTiming
from expotion_live.engine.source import ChunkRequest, GenerationParams
from expotion_live.engine.synth import SynthSource
from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, UPPER_BODY, FeatureFrame, TimelineWindow
from expotion_live.outputs.osc.control import MAX_PACKET_BYTES, ControlServer
from expotion_live.outputs.osc.targets import OscTargetError, parse_target
from expotion_live.commands.run import RunNotices
from expotion_live.live.session import LiveSession, SessionStatus
from expotion_live import settings as settings_mod
from expotion_live.settings import RANGES, Settings, SettingsError, load, override
from test_osc import RecordedControls
from test_train_prepare import blank_video, clicks
from test_train_resume import prepared_dataset, run_in_process, train_args
from test_ui_window import live_window, make_window, receiver, wait_until  # noqa: F401 (fixtures)

SR = 32000
REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], settings: Settings | None = None) -> int:
    """`expotion-live run ...` through its real parser, in this process."""
    parser = argparse.ArgumentParser(prog="expotion-live")
    run_mod.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *argv])
    return args.handler(args, settings or Settings())


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kib)`: a real file system of that size (a tmpfs), unmounted afterwards."""
    mounted = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"a full disk needs a small tmpfs, and mounting one failed: {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


# -- signals and kills ---------------------------------------------------------------------
def start_headless(folder: Path, video: Path, preexec_fn=None) -> subprocess.Popen:
    """The installation command in its own process, returned once it is playing."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "expotion_live.cli", "run", "--headless", "--engine", "synth", "--video", str(video),
         "--file-only", "--out", "show.wav"], cwd=folder, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=preexec_fn)
    for line in proc.stderr:
        if "SynthSource -> file" in line:
            return proc
    proc.kill()
    raise AssertionError(f"the run never started: {proc.communicate()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_keep_the_recording_like_ctrl_c(tmp_path, face_video, sig):
    proc = start_headless(tmp_path, face_video)
    time.sleep(2.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    audio, sr = sf.read(tmp_path / "show.wav", dtype="float32")
    assert sr == SR and len(audio) > SR and np.abs(audio).max() > 1e-3
    assert "played" in err and temporaries(tmp_path) == []


def test_sigint_stops_a_run_started_in_the_background_by_a_script(tmp_path, face_video):
    """`expotion-live run ... &` in a script starts with SIGINT ignored; `kill -INT` must still stop it in order."""
    proc = start_headless(tmp_path, face_video, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "played" in err and sf.info(str(tmp_path / "show.wav")).duration > 0.5


def test_sigterm_while_the_model_loads_says_what_stopped_it(tiny_musicgen_dir, tmp_path, face_video):
    proc = subprocess.Popen(
        [sys.executable, "-m", "expotion_live.cli", "run", "--headless", "--engine", "musicgen", "--model",
         str(tiny_musicgen_dir), "--precision", "fp32", "--video", str(face_video), "--file-only", "--out",
         "show.wav"], cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 60
    while str(tiny_musicgen_dir / "model.safetensors") not in maps.read_text():   # the decoder's weights are read
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the model never loaded: {proc.communicate()}")
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)                     # T5, EnCodec and the warm-up are still to come
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["expotion-live run: stopped by SIGTERM before it finished"]
    assert not (tmp_path / "show.wav").exists() and list(tmp_path.glob(".show*")) == []


def test_a_second_run_on_the_same_out_is_refused_and_a_killed_runs_lock_is_no_obstacle(tmp_path, face_video,
                                                                                         capsys):
    first = start_headless(tmp_path, face_video)
    out = tmp_path / "show.wav"
    argv = ["--headless", "--video", str(face_video), "--engine", "synth", "--duration", "0.5", "--file-only",
            "--out", str(out)]
    try:
        assert run(argv) == 1
        assert capsys.readouterr().err.strip() == (f"expotion-live run: --out {out} is being written by another "
                                                   f"run (pid {first.pid}); stop it or choose another file")
    finally:
        first.kill()                                     # SIGKILL: its lock file stays behind, unlocked
        first.communicate(timeout=30)
    assert (tmp_path / ".show.wav.lock").exists()
    second = subprocess.run([sys.executable, "-m", "expotion_live.cli", "run", *argv], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)   # a whole run: its own process
    assert second.returncode == 0, second.stderr[-500:]
    assert sf.info(str(out)).duration >= 0.5 and not (tmp_path / ".show.wav.lock").exists()


def test_sigterm_closes_the_window_as_its_close_button_does(tmp_path, face_video):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-m", "expotion_live.cli", "gui", "--camera", str(face_video), "--start"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = tmp_path / "expotion-live" / "settings.toml"
    time.sleep(8.0)
    assert proc.poll() is None and not saved.exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0                    # shut down in order
    assert not saved.exists()                            # the performer changed nothing: nothing is written


def test_temporaries_of_a_killed_run_are_removed_on_the_next_start_there(tmp_path, face_video):
    proc = start_headless(tmp_path, face_video)
    time.sleep(1.0)
    proc.kill()                                          # SIGKILL: nothing can clean up
    proc.communicate(timeout=30)
    stale = temporaries(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".show.") and not (tmp_path / "show.wav").exists()

    writing = AtomicFile(tmp_path / "other.wav")         # a live writer's temporary is locked: left alone
    recorder = WavRecorder(tmp_path / "show.wav", SR)    # the next start in that folder
    assert stale[0] not in temporaries(tmp_path) and writing.tmp.exists()
    recorder.push(np.full(512, 0.1, np.float32))
    assert recorder.close() == tmp_path / "show.wav"
    writing.abort()
    assert temporaries(tmp_path) == []


SHOW_SETTINGS = """# the rig of the Tuesday show
[generation]
prompt = "dark cello drones"   # chosen at rehearsal

[osc]
control_port = 0
"""


@pytest.mark.parametrize("with_config", [False, True])
def test_a_window_closed_without_changes_writes_no_settings(tmp_path, face_video, with_config):
    """Rehearsal flags (--camera take.mp4, --osc) never reach a settings file; with --config the default one is
    not even made."""
    default = tmp_path / "config" / "expotion-live" / "settings.toml"
    show = tmp_path / "show.toml"
    (show if with_config else default).parent.mkdir(parents=True, exist_ok=True)
    (show if with_config else default).write_text(SHOW_SETTINGS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "QT_QPA_PLATFORM": "offscreen"}
    head = ["--config", str(show)] if with_config else []
    result = subprocess.run([sys.executable, "-m", "expotion_live.cli", *head, "gui", "--camera", str(face_video),
                             "--osc", "127.0.0.1:9", "--quit-after", "3"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (show if with_config else default).read_text() == SHOW_SETTINGS
    assert with_config is not default.exists()


def test_the_window_saves_only_the_performers_changes_keeping_comments(make_window, qapp, tmp_path):
    path = tmp_path / "settings.toml"                    # where make_window's window saves
    path.write_text(SHOW_SETTINGS)
    window = make_window(**{"camera.source": "take.mp4"})           # a one-off flag
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)         # from the control port
    sock.sendto(message("/expotion/prompt", "sent over OSC"), ("127.0.0.1", window.control.port))
    sock.close()
    assert wait_until(qapp, lambda: window.settings.generation.prompt == "sent over OSC", timeout=10)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "loud.toml").write_text("[generation]\ncfg = 6.0\n")
    window.load_preset("loud")
    window.temperature.setValue(0.7)                                # the performer's one change
    window.close()
    assert path.read_text() == SHOW_SETTINGS.replace("\n\n[osc]", "\ntemperature = 0.7\n\n[osc]")


def test_save_changes_keeps_keys_this_version_does_not_know(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[audio]\nlimiter = true  # a newer version's key\n")
    settings_mod.save_changes(path, {"audio.block_size": 256, "osc.targets": ("127.0.0.1:9000",)})
    assert path.read_text() == ('[audio]\nlimiter = true  # a newer version\'s key\nblock_size = 256\n\n'
                                '[osc]\ntargets = ["127.0.0.1:9000"]\n')


def test_a_full_disk_when_the_window_saves_is_one_line(make_window, small_disk, capsys):
    disk = small_disk(16)
    with pytest.raises(OSError), open(disk / "filler", "wb", buffering=0) as filler:   # to the last byte
        while True:
            filler.write(b"x" * 4096)
    window = make_window()
    window.settings_path = disk / "settings.toml"
    window.temperature.setValue(0.7)
    window.shutdown()
    window.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"expotion-live gui: your settings changes were not saved: disk full: cannot write "
                   f"{disk / 'settings.toml'} (0 KiB free in {disk})"]
    assert not (disk / "settings.toml").exists() and temporaries(disk) == []


# -- a failed run and a full disk ----------------------------------------------------------
class FailingSource(SynthSource):
    """A music source whose model fails at once (as an impossible setting once made it)."""

    def render(self, request: ChunkRequest) -> np.ndarray:
        raise MemoryError("cannot allocate 44.2 TiB")


def test_a_run_that_played_nothing_leaves_the_older_recording_alone(tmp_path, face_video):
    out = tmp_path / "show.wav"
    sf.write(out, np.full(SR, 0.25, np.float32), SR)
    before = out.read_bytes()
    settings = override(Settings(), {"audio.out": str(out)})
    frames = [FeatureFrame(t=i / 30) for i in range(30)]      # a recording of a still performer
    session = LiveSession(settings, FailingSource(), frames, output="file")
    session.start()
    assert session.wait(timeout=10) is False             # generation failed
    assert session.stop() is None
    assert out.read_bytes() == before and temporaries(tmp_path) == []


def test_disk_full_during_a_run_stops_the_recording_not_the_show(small_disk, face_video, capsys):
    disk = small_disk(160)
    out = disk / "show.wav"
    code = run(["--headless", "--engine", "synth", "--video", str(face_video), "--out", str(out),
                "--file-only", "--duration", "3"])
    err = capsys.readouterr().err
    stopped = [line for line in err.splitlines() if "disk full" in line]
    assert code == 1 and "Traceback" not in err
    assert len(stopped) == 1 and stopped[0].startswith("expotion-live run: disk full: recording stopped at ")
    assert stopped[0].endswith(f"kept in {out}")
    assert "played 3.0 s" in err                         # the show went on to the end
    audio, sr = sf.read(out, dtype="float32")            # the part recorded is a valid WAV file
    assert sr == SR and 0.3 * SR < len(audio) < 1.5 * SR and np.abs(audio).max() > 1e-3
    assert sorted(p.name for p in disk.iterdir()) == ["show.wav"]   # no temporary keeps the disk full


def test_disk_full_while_the_window_records_shows_a_banner_and_plays_on(live_window, qapp, small_disk):
    out = small_disk(160) / "show.wav"
    window = live_window(**{"engine.kind": "synth", "audio.out": str(out)})
    window.start()
    assert wait_until(qapp, lambda: "disk full" in window.banner.text(), timeout=30), window.banner.text()
    assert window.banner.text().startswith("disk full: recording stopped at ") and window.running
    played = window.last_status.played_seconds
    assert wait_until(qapp, lambda: window.last_status.played_seconds > played + 1.0)   # the show goes on
    window.start_button.click()
    assert wait_until(qapp, lambda: not window.running)
    assert sf.info(out).frames > 0.3 * SR and temporaries(out.parent) == []


def test_disk_full_in_generate_says_so_and_where(small_disk, tiny_musicgen_dir, capsys):
    disk = small_disk(48)
    (disk / "out.wav").write_bytes(b"an older take")
    code = cli.main(["generate", "--model", str(tiny_musicgen_dir), "--precision", "fp32", "--prompt", "strings",
                     "--seconds", "1", "--seed", "0", "--out", str(disk / "out.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"error: disk full: cannot write {disk / 'out.wav'}")
    assert (disk / "out.wav").read_bytes() == b"an older take" and temporaries(disk) == []


def test_disk_full_in_train_says_so_and_where(small_disk, tiny_musicgen_dir, tmp_path, capsys):
    from expotion_live.model.generate import MusicGen

    data = prepared_dataset(tmp_path / "data", MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32"),
                            n_clips=4)
    disk = small_disk(16)
    code = run_in_process(*train_args(data, tiny_musicgen_dir, disk / "run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("expotion-live: disk full: cannot write ")
    assert str(disk / "run") in err[-1] and temporaries(disk / "run") == []


# -- settings and numbers ------------------------------------------------------------------
@pytest.mark.parametrize("section, key, value", [
    ("audio", "block_size", 0), ("osc", "control_port", 70000), ("tracking", "timeline_seconds", 1e9),
    ("generation", "context_seconds", 1e9), ("audio", "sample_rate", 0), ("audio", "buffer_seconds", 0),
    ("generation", "cfg", float("nan")), ("camera", "fps", float("inf")),
])
def test_impossible_settings_are_refused_at_load_naming_key_and_range(tmp_path, section, key, value):
    path = tmp_path / "show.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    low, high = RANGES[f"{section}.{key}"]
    with pytest.raises(SettingsError) as err:
        load(path)
    assert str(err.value) == f"{path}: {section}.{key} = {value!r} is outside {low:g} to {high:g}"


def test_every_number_in_the_settings_has_a_range():
    numbers = set()
    for section in dataclasses.fields(Settings):
        values = getattr(Settings(), section.name)
        numbers |= {f"{section.name}.{f.name}" for f in dataclasses.fields(values)
                    if type(getattr(values, f.name)) in (int, float)}
    assert numbers == set(RANGES)


def test_a_config_that_is_a_folder_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path), "run", "--headless"]) == 2
    assert capsys.readouterr().err == (f"expotion-live: settings error: settings file {tmp_path} is a folder; "
                                       f"pass a TOML file\n")


@pytest.mark.parametrize("argv, flag", [
    (["generate", "--seconds", "inf"], "--seconds"), (["generate", "--seconds", "nan"], "--seconds"),
    (["generate", "--temperature", "nan"], "--temperature"), (["generate", "--cfg", "-2"], "--cfg"),
    (["generate", "--cfg", "nan"], "--cfg"), (["generate", "--top-k", "-3"], "--top-k"),
    (["generate", "--top-p", "5"], "--top-p"), (["run", "--duration", "nan"], "--duration"),
    (["run", "--duration", "inf"], "--duration"), (["evaluate", "data", "--cfg", "inf"], "--cfg"),
    (["train", "data", "--out", "x", "--lr", "nan"], "--lr"),
])
def test_non_finite_or_out_of_range_flags_are_refused_with_the_range(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and f"argument {flag}: {argv[-1]} is outside " in err[-1] and " to " in err[-1]


@pytest.mark.parametrize("name, reason", [
    ("folder/", "is a folder"), ("noextension", "writes .wav files only"), ("show.mp3", "writes .wav files only"),
])
def test_output_paths_are_checked_before_any_work(tmp_path, face_video, capsys, name, reason):
    (tmp_path / "folder").mkdir()
    out = str(tmp_path / name) + ("/" if name.endswith("/") else "")
    missing_model = str(tmp_path / "no-model")           # loading would fail later: the path is checked first
    assert cli.main(["generate", "--model", missing_model, "--out", out]) == 1
    assert run(["--headless", "--video", str(face_video), "--out", out, "--engine", "synth"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(f"--out {out.rstrip('/')}" in line and reason in line for line in err)


@pytest.mark.parametrize("target, reason", [
    ("300.1.1.1:9000", "300.1.1.1 is not an IPv4 address"),
    ("no-such-host.invalid:9000", "host 'no-such-host.invalid' cannot be resolved"),
])
def test_osc_targets_no_packet_could_reach_are_refused(target, reason, tmp_path, face_video, capsys):
    with pytest.raises(OscTargetError, match=reason):
        parse_target(target)
    settings = override(Settings(), {"osc.targets": (target,), "osc.control_port": 0})
    assert run(["--headless", "--video", str(face_video), "--engine", "synth", "--duration", "1",
                "--out", str(tmp_path / "x.wav"), "--file-only"], settings) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(reason + (
        "; check the name or use its IP address" if "resolved" in reason else
        " (four numbers 0-255, like 192.168.1.20)"))


# -- damaged models and packets -----------------------------------------------------------
def damaged_copy(model_dir: Path, folder: Path, part: str, value: float) -> tuple[Path, str]:
    """A copy of the MusicGen at `model_dir` whose first weight under `part` is all `value`, and that weight's name."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    name = next(name for name in state if name.startswith(part) and state[name].is_floating_point())
    state[name] = torch.full_like(state[name], value)
    save_file(state, str(weights), metadata={"format": "pt"})
    return folder, name


@pytest.fixture(scope="module")
def nan_model(tiny_musicgen_dir, tmp_path_factory):
    """The tiny MusicGen with NaN in an output head, as a damaged download would have."""
    return damaged_copy(tiny_musicgen_dir, tmp_path_factory.mktemp("nan") / "musicgen", "decoder.lm_heads", math.nan)


def damaged_line(folder: Path, name: str) -> str:
    return (f"{folder / 'model.safetensors'}: weight {name} holds NaN or infinite values (the file is damaged); "
            f"download or copy the model folder again")


def test_nan_weights_are_named_as_damaged_in_generate_and_run(nan_model, tmp_path, face_video, capsys):
    folder, name = nan_model
    assert cli.main(["generate", "--model", str(folder), "--precision", "fp32", "--seconds", "0.2",
                     "--out", str(tmp_path / "out.wav")]) == 1
    assert run(["--headless", "--video", str(face_video), "--engine", "musicgen", "--model", str(folder),
                "--precision", "fp32", "--out", str(tmp_path / "show.wav"), "--file-only", "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "multinomial" not in err
    assert err.strip().splitlines() == [f"error: {damaged_line(folder, name)}",
                                        f"expotion-live run: {damaged_line(folder, name)}"]
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "show.wav").exists()


@pytest.mark.parametrize("part", ["text_encoder.", "enc_to_dec_proj.", "audio_encoder.decoder."])
def test_nan_in_t5_or_encodec_is_named_at_load_not_written_as_audio(part, tiny_musicgen_dir, tmp_path, face_video,
                                                                    capsys):
    from expotion_live.model.config import CheckpointError
    from expotion_live.model.generate import MusicGen

    folder, name = damaged_copy(tiny_musicgen_dir, tmp_path / "musicgen", part, math.nan)
    with pytest.raises(CheckpointError) as raised:
        MusicGen.load(folder, precision="fp32")
    assert str(raised.value) == damaged_line(folder, name)
    assert cli.main(["generate", "--model", str(folder), "--seconds", "0.2", "--out", str(tmp_path / "out.wav")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {damaged_line(folder, name)}"
    assert not (tmp_path / "out.wav").exists()


def test_audio_that_overflows_to_nan_is_refused_by_generate_and_never_played(tiny_musicgen_dir, tmp_path,
                                                                            face_video, capsys):
    """Finite weights so large that EnCodec's output overflows: no file of NaN, no NaN in the ring."""
    last_conv = "audio_encoder.decoder.layers.15.conv.parametrizations.weight.original0"    # its weight-norm gain
    folder, _ = damaged_copy(tiny_musicgen_dir, tmp_path / "musicgen", last_conv, 3e38)
    assert cli.main(["generate", "--model", str(folder), "--precision", "fp32", "--seconds", "0.2",
                     "--out", str(tmp_path / "out.wav")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: the generated audio holds NaN or infinite samples; {tmp_path / 'out.wav'} was not written")
    assert not (tmp_path / "out.wav").exists()
    assert run(["--headless", "--video", str(face_video), "--engine", "musicgen", "--model", str(folder),
                "--precision", "fp32", "--out", str(tmp_path / "show.wav"), "--file-only", "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert "MusicGenSource returned NaN or infinite samples for chunk 0" in err.strip().splitlines()[-1]
    assert not (tmp_path / "show.wav").exists()


def test_an_adaptor_with_nan_names_its_file_and_tensor(tiny_musicgen_dir, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from expotion_live.model.adaptor import AdaptorConfig, AdaptorError, ConditionAdaptor, load_adaptor, save_adaptor
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    folder = save_adaptor(ConditionAdaptor(AdaptorConfig(n_layers=2), musicgen.decoder), tmp_path / "adaptor")
    weights = folder / "adaptor.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(weights)
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], math.inf)
    save_file(state, str(weights), metadata=metadata)
    with pytest.raises(AdaptorError, match=f"^{weights}: tensor {name} holds NaN or infinite values"):
        load_adaptor(folder, musicgen)


def test_control_port_counts_invalid_utf8_and_oversize_packets(caplog):
    controls = RecordedControls()
    server = ControlServer(controls, port=0).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    not_utf8 = b"/expotion/prompt\x00\x00\x00\x00,s\x00\x00\xff\xfe\xfd\x00"
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(200):
                sock.sendto(not_utf8, ("127.0.0.1", server.port))
            too_large = b"/expotion/prompt\x00\x00\x00\x00,s\x00\x00" + b"a" * (MAX_PACKET_BYTES + 100) + b"\x00" * 4
            sock.sendto(too_large, ("127.0.0.1", server.port))
            sock.sendto(b"/expotion/stop\x00\x00,\x00\x00\x00", ("127.0.0.1", server.port))
            assert controls.event.wait(10)
            counts = server.snapshot()
    finally:
        sock.close()
        server.stop()
    assert counts == {"malformed": 200, "too_large": 1, "handled": 1}
    assert all(record.exc_info is None for record in caplog.records)       # no traceback per packet
    assert len(caplog.records) <= 10 + 2 + 1
    assert any("more than 8192 bytes" in record.getMessage() for record in caplog.records)


def serve(controls, **options) -> tuple[ControlServer, socket.socket]:
    server = ControlServer(controls, port=0, **options).start()
    return server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def message(address: str, *args) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def wait_for(server: ControlServer, total: int) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while sum(server.snapshot().values()) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.snapshot()


def test_control_port_refuses_a_prompt_too_long_to_encode_in_time():
    from expotion_live.outputs.osc.control import MAX_PROMPT_CHARS

    controls = RecordedControls()
    server, sock = serve(controls)
    try:
        sock.sendto(message("/expotion/prompt", "a" * 7800), ("127.0.0.1", server.port))
        sock.sendto(message("/expotion/prompt", "b" * MAX_PROMPT_CHARS), ("127.0.0.1", server.port))
        counts = wait_for(server, 2)
    finally:
        sock.close()
        server.stop()
    assert counts == {"malformed": 1, "handled": 1} and controls.calls == [("prompt", "b" * MAX_PROMPT_CHARS)]


def test_control_port_limits_each_senders_rate_per_address(caplog):
    from expotion_live.outputs.osc.control import RATE_BURST

    controls = RecordedControls()
    server, sock = serve(controls)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(200):                         # a runaway fader: far faster than any hand
                sock.sendto(message("/expotion/guidance", 4.0), ("127.0.0.1", server.port))
            sock.sendto(message("/expotion/temperature", 0.5), ("127.0.0.1", server.port))   # another address
            counts = wait_for(server, 201)
    finally:
        sock.close()
        server.stop()
    assert counts["rate_limited"] >= 200 - RATE_BURST - 5 and counts["handled"] == 201 - counts["rate_limited"]
    assert ("temperature", 0.5) in controls.calls and len(caplog.records) <= 12


def test_python_oscs_own_warnings_go_through_the_log_limit(caplog):
    """Type tags python-osc cannot parse made it log one root WARNING per packet, past the app's limit."""
    controls = RecordedControls()
    server, sock = serve(controls)
    odd_tag = b"/expotion/stop\x00\x00,x\x00\x00"
    odd_bundle = b"#bundle\x00" + bytes(8) + struct.pack(">i", 4) + b"junk"
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(1000):
                sock.sendto(odd_bundle if i % 2 else odd_tag, ("127.0.0.1", server.port))
                time.sleep(0.0002)                       # within the socket's buffer: every packet is read
            counts = wait_for(server, 1000)
    finally:
        sock.close()
        server.stop()
    assert counts == {"malformed": 1000} and controls.calls == []
    assert [r.name for r in caplog.records if r.name != "expotion_live.outputs.osc.control"] == []
    assert len(caplog.records) <= 10 + 10


def test_a_control_port_open_to_the_network_needs_the_shared_secret(caplog):
    from expotion_live.outputs.osc.control import ControlError

    with pytest.raises(ControlError, match=r"^control_host 0.0.0.0 lets other machines control the show: set "
                                           r"\[osc\] control_secret"):
        ControlServer(RecordedControls(), port=0, host="0.0.0.0")
    controls = RecordedControls()
    server, sock = serve(controls, host="0.0.0.0", secret="tuesday-7f3a")
    try:
        with caplog.at_level(logging.WARNING):
            for packet in (message("/expotion/prompt", "take over"), message("/expotion/prompt", "guess", "x"),
                           message("/expotion/prompt", "tuesday-7f3a", "slow strings"),
                           message("/expotion/stop", "tuesday-7f3a")):
                sock.sendto(packet, ("127.0.0.1", server.port))
            assert controls.event.wait(10)
            counts = wait_for(server, 4)
    finally:
        sock.close()
        server.stop()
    assert counts == {"unauthenticated": 2, "handled": 2}
    assert controls.calls == [("prompt", "slow strings"), ("stop",)]
    assert "without the control secret" in caplog.records[0].getMessage()


def test_doctor_says_a_control_port_open_to_the_network_needs_a_secret(tmp_path, capsys):
    config = tmp_path / "show.toml"
    config.write_text('[osc]\ncontrol_host = "0.0.0.0"\n')
    cli.main(["--config", str(config), "doctor", "--json", "--checkpoints", str(tmp_path)])
    check = next(c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "OSC control port")
    assert not check["ok"] and check["fix"].startswith("set [osc] control_secret")


def test_presets_change_the_music_only_and_stay_in_their_folder(tmp_path):
    from expotion_live.presets import PresetError, apply_preset

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "takeover.toml").write_text('[generation]\nprompt = "noise"\n[audio]\nout = "/tmp/x.wav"\n'
                                           '[osc]\ncontrol_port = 0\n')
    (tmp_path / "outside.toml").write_text('[generation]\nprompt = "from elsewhere"\n')
    (presets / "linked.toml").symlink_to(tmp_path / "outside.toml")
    settings = Settings()
    with pytest.raises(PresetError, match=r"sets \[audio\]: presets change generation only, unless the settings "
                                          r"file has \[osc\] presets_all_sections = true"):
        apply_preset(settings, presets, "takeover")
    with pytest.raises(PresetError, match="links to .*outside.toml, outside .*presets: presets are read from"):
        apply_preset(settings, presets, "linked")
    allowed = apply_preset(override(settings, {"osc.presets_all_sections": True}), presets, "takeover")
    assert allowed.audio.out == "/tmp/x.wav" and allowed.osc.control_port == 0


def test_model_folder_without_a_tokenizer_names_what_is_missing(tiny_musicgen_dir, tmp_path, face_video, capsys):
    folder = tmp_path / "musicgen"
    shutil.copytree(tiny_musicgen_dir, folder)
    for name in ("spiece.model", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)
    assert run(["--headless", "--video", str(face_video), "--engine", "musicgen", "--model", str(folder)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"expotion-live run: {folder} is not a complete MusicGen folder: missing spiece.model or tokenizer.json; "
        f"run `expotion-live download small` again (it resumes) or pass --model DIR")


def test_adaptor_for_another_layer_count_names_its_file(tiny_musicgen_dir, tmp_path):
    from expotion_live.model.adaptor import AdaptorConfig, AdaptorError, ConditionAdaptor, load_adaptor, save_adaptor
    from expotion_live.model.config import DecoderConfig
    from expotion_live.model.decoder import MusicGenDecoder
    from expotion_live.model.generate import MusicGen

    deeper = MusicGenDecoder(DecoderConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, ffn_dim=128))
    folder = save_adaptor(ConditionAdaptor(AdaptorConfig(n_layers=4), deeper), tmp_path / "adaptor")
    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    with pytest.raises(AdaptorError, match=f"^{folder / 'adaptor.safetensors'}: n_layers=4 but the decoder has 2"):
        load_adaptor(folder, musicgen)


# -- damaged inputs ------------------------------------------------------------------------
def cut_video(face_video: Path, folder: Path) -> Path:
    """A recording interrupted partway: the header promises 3 s, the frames stop near half of it."""
    whole = folder / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(face_video), "-t", "3", "-c", "copy",
                    "-movflags", "+faststart", str(whole)], check=True)
    cut = folder / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    return cut


def test_a_video_cut_off_partway_is_reported_with_the_real_tracking_rate(tmp_path, face_video, capsys):
    video = cut_video(face_video, tmp_path)
    code = run(["--headless", "--engine", "synth", "--video", str(video), "--out", str(tmp_path / "show.wav"),
                "--file-only", "--duration", "4"])
    err = capsys.readouterr().err.splitlines()
    assert code == 0
    ended = [line for line in err if line.startswith("expotion-live run: tracking error: ")]
    assert len(ended) == 1 and "it is truncated or corrupt" in ended[0]
    assert ended[0].endswith("the music goes on from the last features")
    summary = next(line for line in err if line.startswith("played 4.0 s"))
    fps = float(summary.split("tracking ")[1].split(" fps")[0])
    assert fps < 25                                      # not the 30 fps of the moments it ran
    assert len(sf.read(tmp_path / "show.wav")[0]) == 4 * SR


def status(**values) -> SessionStatus:
    blank = {f.name: (None if "None" in str(f.type) else "" if f.type == "str" else False if f.type == "bool"
                      else () if "tuple" in str(f.type) else 0) for f in dataclasses.fields(SessionStatus)}
    return SessionStatus(**{**blank, "tracking_status": "running", **values})


def test_a_source_that_stops_delivering_is_said_once(capsys):
    notices = RunNotices(stall_seconds=0.2)
    notices.update(status(tracked_frames=0, played_seconds=0.1))
    time.sleep(0.3)
    notices.update(status(tracked_frames=0, played_seconds=0.4))      # the tracker still starting: no stall
    notices.update(status(tracked_frames=10, played_seconds=1.0))
    time.sleep(0.3)
    notices.update(status(tracked_frames=10, played_seconds=1.3))
    notices.update(status(tracked_frames=10, played_seconds=1.4))
    notices.update(status(tracked_frames=11, played_seconds=2.0))
    assert capsys.readouterr().err.splitlines() == [
        "expotion-live run: no frames from the camera or video for 0.2 s at 1.3 s; the music goes on from the "
        "last features",
        "expotion-live run: frames arrive again at 2.0 s",
    ]


@pytest.fixture
def performer(tmp_path):
    """A dataset folder with one good clip (a blank video, its music beside it)."""
    root = tmp_path / "performer"
    (root / "good").mkdir(parents=True)
    blank_video(root / "good" / "take.mp4", 1.0)
    sf.write(root / "good" / "music.wav", clicks(1.0, 120), SR)
    return root


def test_prepare_rebuilds_a_damaged_cache_and_train_names_the_file(performer, tiny_musicgen_dir, tmp_path):
    from expotion_live.model.generate import MusicGen
    from expotion_live.settings import TrackingSettings
    from expotion_live.train.dataset import DatasetError, cache_dir_for, load_clip
    from expotion_live.train.prepare import prepare_dataset

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    cache = cache_dir_for(performer)
    prepare = dict(min_seconds=0.5, min_face_fraction=0.0, progress=False)
    assert prepare_dataset(performer, musicgen, TrackingSettings(), cache, **prepare).prepared
    face = cache / "clips" / "good" / "face.npy"
    face.write_bytes(face.read_bytes()[:200])            # truncated, as a full disk or a kill leaves it
    with pytest.raises(DatasetError, match=f"^{face} is damaged"):
        load_clip(cache, "good")
    lines = []
    report = prepare_dataset(performer, musicgen, TrackingSettings(), cache, log=lines.append, **prepare)
    assert [name for name, _ in report.prepared] == ["good"] and not report.reused
    assert lines[0].startswith(f"rebuilding good: {face} is damaged")
    assert load_clip(cache, "good").face.shape[0] == report.prepared[0][1]


def test_train_names_a_damaged_cache_file(tiny_musicgen_dir, tmp_path, capsys):
    from expotion_live.model.generate import MusicGen

    data = prepared_dataset(tmp_path / "data", MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32"),
                            n_clips=3)
    face = data / ".expotion_cache" / "clips" / "clip01" / "face.npy"
    face.write_bytes(face.read_bytes()[:200])
    assert run_in_process(*train_args(data, tiny_musicgen_dir, tmp_path / "run")) == 1
    assert capsys.readouterr().err.strip().startswith(f"expotion-live: {face} is damaged (")


def test_clips_without_music_name_the_clip_and_the_missing_file(performer, tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen
    from expotion_live.settings import TrackingSettings
    from expotion_live.train.dataset import cache_dir_for
    from expotion_live.train.prepare import prepare_dataset

    (performer / "silent").mkdir()
    blank_video(performer / "silent" / "take.mp4", 1.0)          # no music file, no sound track
    (performer / "dangling").mkdir()
    blank_video(performer / "dangling" / "take.mp4", 1.0)
    (performer / "dangling" / "music.wav").symlink_to(performer / "gone.wav")
    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    report = prepare_dataset(performer, musicgen, TrackingSettings(), cache_dir_for(performer), min_seconds=0.5,
                             min_face_fraction=0.0, progress=False, log=lambda line: None)
    skipped = dict(report.skipped)
    assert skipped["dangling"] == f"music.wav is a broken link (to {performer / 'gone.wav'})"
    assert skipped["silent"].startswith("no music: no audio file (.wav, ") and \
        skipped["silent"].endswith("beside take.mp4, and it has no sound track")


def test_a_silent_music_file_is_prepared_with_a_warning(performer, tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen
    from expotion_live.settings import TrackingSettings
    from expotion_live.train.dataset import cache_dir_for
    from expotion_live.train.prepare import prepare_dataset

    (performer / "mute").mkdir()
    blank_video(performer / "mute" / "take.mp4", 1.0)
    sf.write(performer / "mute" / "music.wav", np.zeros(SR, np.float32), SR)
    lines = []
    prepare_dataset(performer, MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32"), TrackingSettings(),
                    cache_dir_for(performer), min_seconds=0.5, min_face_fraction=0.0, progress=False, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == ["warning: the music of mute (music.wav) is silent: the adaptor would learn silence for this "
                        "performance; check the file"]


def test_train_without_validation_clips_points_to_no_best_folder(tiny_musicgen_dir, tmp_path, capsys):
    from expotion_live.model.generate import MusicGen

    data = prepared_dataset(tmp_path / "data", MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32"),
                            n_clips=2)
    argv = train_args(data, tiny_musicgen_dir, tmp_path / "run")
    argv[argv.index("--val-fraction") + 1] = "0"
    assert run_in_process(*argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "best").exists() and "best" not in last.split("(no validation clips")[0]
    assert last == (f"adaptor: {tmp_path / 'run'} (latest) (no validation clips, so no best/: --val-fraction holds "
                    f"some out when there are enough); curves: {tmp_path / 'run' / 'curves.png'}")


# -- diagnosis and messages ----------------------------------------------------------------
def test_doctor_diagnoses_a_damaged_settings_file(tmp_path, capsys):
    config = tmp_path / "show.toml"
    config.write_text("[audio]\nblock_size = 0\n")
    assert cli.main(["--config", str(config), "doctor", "--json", "--checkpoints", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    first = report["checks"][0]
    assert first["name"] == "settings file" and not first["ok"] and first["needed_for_show"]
    assert first["detail"] == f"{config}: audio.block_size = 0 is outside 16 to 16384"
    assert not report["show_ready"] and len(report["checks"]) > 5        # and every other check still ran
    assert cli.main(["--config", str(config), "run", "--headless"]) == 2  # the show itself refuses it


def test_camera_auto_with_no_camera_says_it_plays_the_demo_video(tmp_path, capsys):
    from expotion_live.capture.sources import list_cameras

    if list_cameras():
        pytest.skip("this machine has a camera")
    assert run(["--headless", "--camera", "auto", "--engine", "synth", "--duration", "0.3", "--file-only",
                "--out", str(tmp_path / "x.wav")]) == 0
    assert ("expotion-live run: no camera found (no cameras are connected): playing the demo video demo_face.mp4 "
            "instead; connect a camera, or pass --camera SPEC or --video FILE") in capsys.readouterr().err


def test_a_folder_given_as_video_is_called_a_folder(tmp_path, face_video, capsys):
    shutil.copy(face_video, tmp_path / "take.mp4")
    assert run(["--headless", "--video", str(tmp_path), "--engine", "synth", "--file-only",
                "--out", str(tmp_path / "x.wav")]) == 1
    assert capsys.readouterr().err.strip() == (f"expotion-live run: {tmp_path} is a folder, not a video file "
                                               f"(it holds take.mp4); pass one video file")


def test_gui_without_a_display_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "expotion_live.cli", "gui"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**env, "PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == ("expotion-live gui: no display (neither DISPLAY nor WAYLAND_DISPLAY is set): "
                                     "the window needs a desktop; headless mode runs anyway "
                                     "(expotion-live run --headless)")


def test_an_adaptor_is_written_with_the_permissions_of_its_siblings(tiny_musicgen_dir, tmp_path):
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    umask = os.umask(0o022)
    try:
        folder = save_adaptor(ConditionAdaptor(AdaptorConfig(n_layers=2), musicgen.decoder), tmp_path / "adaptor")
    finally:
        os.umask(umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert modes == {"adaptor.safetensors": "0o644", "adaptor.json": "0o644"}


# -- the music goes on ---------------------------------------------------------------------
def test_the_synth_keeps_playing_when_the_tempo_slows_mid_bar():
    """A performer leaving the frame changes the motion the tempo follows (96 -> 60 bpm here);
    the held pad used to end with the bar it was sized for, leaving a gap before the next bar."""
    T = 20 * 50
    t = np.arange(T) / 50
    beat_hz = np.where(t < 5, 1.6, 0.95)
    energy = 0.06 * (1 + np.sin(np.cumsum(2 * np.pi * beat_hz / 50))) ** 3 / 4
    motion = np.zeros((T, MOTION_DIM), np.float32)
    motion[:, 4 * len(UPPER_BODY)] = energy
    timeline = TimelineWindow(t_end=T / 50, face=np.zeros((T, FACE_DIM), np.float32), motion=motion,
                              flow=np.zeros((T, *FLOW_SHAPE), np.float32))
    source, tempi, generation = SynthSource(SR, seed=0), set(), Settings().generation
    audio = offline.render(source, timeline, GenerationParams.from_settings(generation),
                           ChunkTiming.from_settings(generation, SR), timeline.n_frames,
                           lambda request: tempi.add(source.controls.bpm))
    block = SR // 20
    rms = np.sqrt((audio[:len(audio) // block * block].reshape(-1, block) ** 2).mean(axis=1))
    assert min(tempi) <= 65 and max(tempi) >= 90
    assert rms.min() > 1e-3                              # never 50 ms of silence


def test_bench_soak_reports_memory_underruns_gaps_and_stretching(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert cli.main(["bench", "soak", "--minutes", "0.1", "--every", "3", "--engine", "synth", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and rows[-1]["played_seconds"] >= 5
    assert {"rss_mib", "underruns", "gaps", "stretched_seconds", "tracking_fps", "rtf", "load_average"} <= set(rows[-1])
    assert rows[-1]["gaps"] >= 0 and rows[-1]["underruns"] >= 0     # counted; how many depends on the machine's load
    assert "underruns" in capsys.readouterr().out

"""`expotion-live generate` end to end: real files out, one-line errors, a video through an adaptor."""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from expotion_live.commands import generate as commands
from expotion_live.model.generate import MusicGen
from expotion_live.settings import Settings


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", *argv])
    return args.handler(args, Settings())


def test_generate_writes_wav_and_codes(tiny_musicgen_dir, tmp_path, capsys):
    out, codes_out = tmp_path / "out.wav", tmp_path / "codes.npy"
    rc = run(["--model", str(tiny_musicgen_dir), "--prompt", "calm piano", "--seconds", "0.5", "--greedy",
              "--precision", "fp32", "--out", str(out), "--codes-out", str(codes_out)])
    assert rc == 0
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 32000 and audio.shape == (16000,) and np.abs(audio).max() > 0
    codes = np.load(codes_out)
    assert codes.shape == (4, 25)
    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    expected = musicgen.generate(musicgen.encode_text(["calm piano"]), 25, greedy=True)
    assert np.array_equal(codes, expected[0].numpy())
    np.testing.assert_allclose(audio, musicgen.decode_audio(expected)[0], atol=1e-6)
    assert "generating" in capsys.readouterr().err  # the progress bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy", "out.wav"]  # no temporary left


@pytest.mark.parametrize("argv, message", [
    (["--model", "/nonexistent/model"], "no such model directory"),
    (["--video", "take.mp4"], "--video needs --adaptor"),
    (["--video-out", "x.mp4"], "--video-out needs --video"),
    (["--adaptor", "runs/me"], "--adaptor needs --video"),
    (["--seconds", "100"], "--seconds 100 is out of range"),
])
def test_expected_failures_are_one_line(tiny_musicgen_dir, tmp_path, capsys, argv, message):
    argv = argv if "--model" in argv else ["--model", str(tiny_musicgen_dir), *argv]
    assert run([*argv, "--out", str(tmp_path / "o.wav")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o.wav").exists()


def test_generate_from_a_video_through_an_adaptor(tiny_musicgen_dir, tmp_path):
    """A video longer than the adaptor's window renders its whole length through the live engine run
    offline (the engine, given the same features and settings, is the oracle), muxed onto the video."""
    from expotion_live.testing.face_video import make_face_video
    from expotion_live.engine import offline
    from expotion_live.engine.musicgen_source import MusicGenSource
    from expotion_live.engine.scheduler import ChunkTiming
    from expotion_live.engine.source import GenerationParams
    from expotion_live.features.offline import extract_video
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, load_adaptor, save_adaptor

    video = make_face_video(tmp_path / "take.mp4", seconds=12.0, fps=10.0)
    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    adaptor = ConditionAdaptor(AdaptorConfig(), musicgen.decoder)   # positions for the 10 s stream window
    with torch.no_grad():
        adaptor.gates.fill_(1.0)  # an untrained adaptor (gates 0) would leave the music unchanged
    save_adaptor(adaptor, tmp_path / "adaptor")

    assert run(["--model", str(tiny_musicgen_dir), "--prompt", "calm piano", "--seed", "7", "--precision", "fp32",
                "--adaptor", str(tmp_path / "adaptor"), "--video", str(video), "--video-out",
                str(tmp_path / "muxed.mp4"), "--out", str(tmp_path / "steered.wav"),
                "--codes-out", str(tmp_path / "steered.npy")]) == 0
    audio, rate = sf.read(tmp_path / "steered.wav", dtype="float32")
    assert rate == 32000 and audio.shape == (596 * 640,)  # 120 frames at 10 fps span 11.9 s = 595 grid steps + 1
    assert np.load(tmp_path / "steered.npy").shape == (4, 596)

    generation = dataclasses.replace(Settings().generation, prompt="calm piano", seed=7)
    source = MusicGenSource.from_settings(musicgen, load_adaptor(tmp_path / "adaptor", musicgen), None, generation)
    expected = offline.render(source, extract_video(video, Settings().tracking, calibrate=True),   # as run tracks it
                              GenerationParams.from_settings(generation),
                              ChunkTiming.from_settings(generation, musicgen.sample_rate), 596)
    np.testing.assert_array_equal(audio, expected)

    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,duration", "-of", "json",
                            str(tmp_path / "muxed.mp4")], capture_output=True, text=True, check=True)
    streams = {s["codec_type"]: float(s["duration"]) for s in json.loads(probe.stdout)["streams"]}
    assert sorted(streams) == ["audio", "video"]
    assert streams["audio"] == pytest.approx(596 / 50, abs=0.1)


def test_video_out_without_ffmpeg_fails_before_loading(tiny_musicgen_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))   # a machine without ffmpeg
    assert run(["--model", str(tiny_musicgen_dir), "--adaptor", "runs/me", "--video", "take.mp4",
                "--video-out", str(tmp_path / "o.mp4"), "--out", str(tmp_path / "o.wav")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ffmpeg is not installed" in err
    assert list(tmp_path.iterdir()) == []

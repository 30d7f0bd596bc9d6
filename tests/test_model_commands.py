"""`expotion-live generate` end to end: real files out, one-line errors, a video through an adaptor."""
from __future__ import annotations

import argparse
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from expotion_live.model import commands
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
    from expotion_live.capture.demo import make_face_video
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor

    video = make_face_video(tmp_path / "take.mp4", seconds=1.0, fps=10.0)
    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    adaptor = ConditionAdaptor(AdaptorConfig(max_frames=64), musicgen.decoder)
    with torch.no_grad():
        adaptor.gates.fill_(1.0)  # an untrained adaptor (gates 0) would leave the music unchanged
    save_adaptor(adaptor, tmp_path / "adaptor")

    common = ["--model", str(tiny_musicgen_dir), "--prompt", "calm piano", "--greedy", "--precision", "fp32"]
    assert run([*common, "--adaptor", str(tmp_path / "adaptor"), "--video", str(video), "--video-out",
                str(tmp_path / "muxed.mp4"), "--out", str(tmp_path / "steered.wav"),
                "--codes-out", str(tmp_path / "steered.npy")]) == 0
    steered = np.load(tmp_path / "steered.npy")
    assert steered.shape[1] == 46  # the video's length: 10 frames at 10 fps span 0.9 s = 45 grid steps + 1
    assert run([*common, "--seconds", str(46 / 50), "--out", str(tmp_path / "plain.wav"),
                "--codes-out", str(tmp_path / "plain.npy")]) == 0
    assert not np.array_equal(steered, np.load(tmp_path / "plain.npy"))

    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json",
                            str(tmp_path / "muxed.mp4")], capture_output=True, text=True, check=True)
    kinds = sorted(s["codec_type"] for s in json.loads(probe.stdout)["streams"])
    assert kinds == ["audio", "video"]

"""`expotion-live run --headless`: the installation/CI mode, through its real argument parser."""
import argparse

import soundfile as sf

from expotion_live import session
from expotion_live.settings import Settings


def run(argv):
    parser = argparse.ArgumentParser(prog="expotion-live")
    session.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *argv])
    return args.handler(args, Settings())


def test_headless_run_on_face_video_with_tiny_model_writes_the_file(tmp_path, face_video, tiny_musicgen_dir, capsys):
    out = tmp_path / "show.wav"
    code = run(["--headless", "--video", str(face_video), "--out", str(out), "--duration", "2",
                "--model", str(tiny_musicgen_dir), "--precision", "fp32", "--engine", "musicgen",
                "--prompt", "slow strings", "--file-only"])
    err = capsys.readouterr().err
    assert code == 0, err
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 32000 and len(audio) == 2 * 32000 and abs(audio).max() > 1e-3
    assert "MusicGenSource -> file" in err and "played 2.0 s" in err and "underruns 0" in err


def test_expected_failures_are_one_line_errors(tmp_path, capsys):
    video = tmp_path / "missing.mp4"
    assert run(["--headless", "--video", str(video), "--out", str(tmp_path / "x.wav")]) == 1
    assert run(["--video", str(video)]) == 1
    assert run(["--headless", "--engine", "musicgen", "--model", str(tmp_path), "--file-only",
                "--out", str(tmp_path / "x.wav")]) == 1
    assert run(["--headless", "--file-only"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"expotion-live run: video file {video} does not exist",
        "expotion-live run: pass --headless (the window is `expotion-live gui`)",
        f"expotion-live run: no MusicGen weights in {tmp_path}: run `expotion-live download small` "
        f"or pass --model DIR (or --engine synth)",
        "expotion-live run: --file-only needs --out WAV",
    ]
    assert not (tmp_path / "x.wav").exists()


def test_unknown_output_device_lists_the_devices(null_sink, tmp_path, face_video, capsys):
    code = run(["--headless", "--video", str(face_video), "--engine", "synth", "--device", "no-such-card",
                "--duration", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "no output device matches 'no-such-card'; available:" in err and "pulse" in err

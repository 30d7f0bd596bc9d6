"""`expotion-live track`: the real subcommand over a short real clip, and its one-line errors."""
import argparse

import pytest

from expotion_live.testing import face_video as demo
from expotion_live.commands import track as commands
from expotion_live.features.recording import load_recording
from expotion_live.settings import Settings


def _parse(*argv):
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["track", *argv])


def test_track_records_every_frame_of_a_file(tmp_path, capsys):
    clip = demo.make_face_video(tmp_path / "clip.mp4", seconds=1.0, fps=15.0, size=(320, 240))
    take = tmp_path / "take.npz"
    args = _parse("--source", str(clip), "--fast", "--no-loop", "--record", str(take))
    assert args.handler(args, Settings()) == 0
    frames = load_recording(take)
    assert len(frames) == 15 and sum(f.face_found for f in frames) >= 12
    assert "recorded 15 frames" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (("--source", "/nowhere/take.mp4"), "does not exist"),
    (("--source", "No Such Camera"), "no camera named"),
    (("--source", "auto", "--record", "take.json"), ".npz"),
])
def test_track_errors_are_one_line(argv, message, capsys):
    args = _parse(*argv)
    assert args.handler(args, Settings()) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err

"""The app on a real X server (Xvfb): `gui --start --screenshot` shows the tracking overlay."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from expotion_live import settings as settings_mod
from expotion_live.ui.overlay import CONTOUR_COLOUR, POSE_COLOUR

RUN_GUI = """
import argparse, sys
from expotion_live import settings
from expotion_live.commands import gui as commands
parser = argparse.ArgumentParser()
commands.add_parser(parser.add_subparsers())
args = parser.parse_args(sys.argv[2:])
sys.exit(args.handler(args, settings.load(sys.argv[1])))
"""


def test_screenshot_under_xvfb_shows_the_overlay(tmp_path, face_video, null_sink):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is not installed: apt-get install xvfb")
    config = tmp_path / "show.toml"
    settings_mod.save(settings_mod.override(settings_mod.Settings(), {
        "camera.source": str(face_video), "camera.mirror_preview": False, "audio.device": null_sink,
        "engine.kind": "synth", "osc.control_port": 0}), config)
    shot = tmp_path / "screenshot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", XDG_CONFIG_HOME=str(tmp_path / "config"))
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-c", RUN_GUI, str(config),
         "gui", "--start", "--osc", "127.0.0.1:9", "--screenshot", str(shot), "--quit-after", "6"],
        env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    image = cv2.imread(str(shot))
    assert image.shape == (800, 1280, 3)
    def pixels(colour):
        return int(np.sum(np.all(np.abs(image.astype(int) - colour) < 40, axis=2)))
    assert pixels(CONTOUR_COLOUR) > 300 and pixels(POSE_COLOUR) > 100     # face mesh and skeleton on screen
    assert not (tmp_path / "config" / "expotion-live" / "settings.toml").exists()   # --osc is for this run only

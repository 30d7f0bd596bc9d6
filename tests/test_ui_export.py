"""Export: the real tracker draws the overlay on a real face video, ffmpeg muxes the played audio."""
from __future__ import annotations

import json
import subprocess
import time

import cv2
import numpy as np
import pytest
import soundfile as sf

from expotion_live.media import MediaError
from expotion_live.settings import Settings
from expotion_live.ui.export import export_performance
from expotion_live.ui.overlay import CONTOUR_COLOUR

SECONDS = 2.0


@pytest.fixture(scope="module")
def performance(tmp_path_factory, face_video):
    """2 s of the demo face video and 2 s of a 440 Hz tone, as a performance leaves them."""
    folder = tmp_path_factory.mktemp("export")
    capture = cv2.VideoCapture(str(face_video))
    writer = cv2.VideoWriter(str(folder / "camera.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    frames = []
    for _ in range(round(SECONDS * 30)):
        ok, image = capture.read()
        assert ok
        writer.write(image)
        frames.append(image)
    writer.release()
    t = np.arange(round(SECONDS * 32000)) / 32000
    sf.write(folder / "played.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 32000)
    return folder, frames


def probe(path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                            capture_output=True, check=True)
    return {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}


def test_export_draws_the_overlay_and_carries_the_audio(performance):
    folder, frames = performance
    progress = []
    out = export_performance(folder / "camera.mp4", folder / "played.wav", folder / "show.mp4",
                             Settings().tracking, progress=lambda done, total: progress.append(done))
    assert progress[-1] == len(frames)
    streams = probe(out)
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 480)
    assert float(streams["audio"]["duration"]) == pytest.approx(SECONDS, abs=0.1)

    capture = cv2.VideoCapture(str(out))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, exported = capture.read()
    assert ok
    # the face contours are drawn in yellow where the input has none
    def yellow(image):
        return int(np.sum(np.all(np.abs(image.astype(int) - CONTOUR_COLOUR) < 60, axis=2)))
    assert yellow(exported) > 300 > yellow(frames[30])

    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-map", "0:a:0", "-ac", "1", "-ar", "32000",
                              "-f", "f32le", "-"], capture_output=True, check=True).stdout
    audio = np.frombuffer(decoded, np.float32)
    spectrum = np.abs(np.fft.rfft(audio[4000:36000]))              # 1 s: bins are 1 Hz apart
    assert abs(int(np.argmax(spectrum)) - 440) <= 2


def test_export_errors_are_clear_and_leave_nothing(performance, tmp_path):
    folder, _ = performance
    with pytest.raises(MediaError, match="does not exist"):
        export_performance(folder / "missing.mp4", folder / "played.wav", tmp_path / "x.mp4", Settings().tracking)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(MediaError, match="cannot read video"):
        export_performance(tmp_path / "broken.mp4", folder / "played.wav", tmp_path / "x.mp4", Settings().tracking)
    (tmp_path / "noise.wav").write_bytes(b"RIFF-not-really")
    with pytest.raises(MediaError, match="ffmpeg could not export"):
        export_performance(folder / "camera.mp4", tmp_path / "noise.wav", tmp_path / "x.mp4", Settings().tracking)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "noise.wav"]


def test_export_command_reports_one_line(performance, tmp_path, capsys):
    import argparse

    from expotion_live.commands import gui as commands

    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", "--video", str(tmp_path / "none.mp4"), "--audio", "x.wav",
                              "--out", str(tmp_path / "o.mp4")])
    assert args.handler(args, Settings()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.mp4 does not exist" in err


def test_an_encoder_that_cannot_start_leaves_no_temporary_file(tmp_path, monkeypatch):
    from expotion_live.ui.export import VideoEncoder

    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))   # a machine without ffmpeg
    with pytest.raises(MediaError, match="ffmpeg is not installed"):
        VideoEncoder(tmp_path / "out" / "show.mp4", (64, 48), 30.0)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_mux_puts_the_audio_on_the_video_as_it_is(performance, tmp_path):
    from expotion_live.media import mux

    folder, _ = performance
    out = mux(folder / "camera.mp4", folder / "played.wav", tmp_path / "out" / "muxed.mp4")
    streams = probe(out)
    assert streams["video"]["codec_name"] == probe(folder / "camera.mp4")["video"]["codec_name"]   # copied
    assert streams["audio"]["codec_name"] == "aac"
    assert float(streams["audio"]["duration"]) == pytest.approx(SECONDS, abs=0.1)
    assert [p.name for p in out.parent.iterdir()] == ["muxed.mp4"]


def test_mux_errors_are_clear_and_leave_nothing(performance, tmp_path, monkeypatch):
    from expotion_live.media import MediaError, mux

    folder, _ = performance
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(MediaError, match="cannot read video .*broken.mp4"):
        mux(tmp_path / "broken.mp4", folder / "played.wav", tmp_path / "x.mp4")
    with pytest.raises(MediaError, match="missing.mp4 does not exist"):
        mux(tmp_path / "missing.mp4", folder / "played.wav", tmp_path / "x.mp4")
    (tmp_path / "noise.wav").write_bytes(b"RIFF-not-really")
    with pytest.raises(MediaError, match="ffmpeg could not mux"):
        mux(folder / "camera.mp4", tmp_path / "noise.wav", tmp_path / "x.mp4")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))   # a machine without ffmpeg
    with pytest.raises(MediaError, match="ffmpeg is not installed"):
        mux(folder / "camera.mp4", folder / "played.wav", tmp_path / "x.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "noise.wav"]


def test_a_performance_whose_tracker_fell_behind_is_filmed_to_the_end_of_its_music(performance, tmp_path):
    """Frames stop arriving after half a second (a tracker far behind): the video still lasts as the music
    does, the last frame held, so the muxed performance keeps picture and sound together to the end."""
    from expotion_live.features.schema import FeatureFrame
    from expotion_live.ui.performance import PerformanceRecorder

    folder, frames = performance
    recorder = PerformanceRecorder(tmp_path / "show", fps=30.0, mirror=False)
    (tmp_path / "show").mkdir()
    recorder.start(origin=100.0)
    for i, image in enumerate(frames[:15]):
        recorder.on_frame(FeatureFrame(t=100.0 + i / 30), image)
        time.sleep(0.005)                        # the writer keeps up: no frame dropped from its queue
    out = recorder.finish(folder / "played.wav")
    streams = probe(out)
    assert float(streams["video"]["duration"]) == pytest.approx(SECONDS, abs=0.1)
    assert float(streams["audio"]["duration"]) == pytest.approx(SECONDS, abs=0.1)

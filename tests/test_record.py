"""Record mode: real playback through the audio path (wall-clock file sink), the real demo
face video as the camera, clips in the training layout that `prepare` accepts."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import soundfile as sf

from expotion_live import settings as settings_mod
from expotion_live.settings import Settings
from expotion_live.train.dataset import find_clips
from expotion_live.train.record import RecordError, plan_clips, record_session

CLIP = 1.5


MARK_STEP = 6      # the camera video's frame i carries a white mark at x = MARK_STEP * i


def marked_camera_video(face_video, path, frames: int = 110):
    """The demo face video with each frame's index drawn as the position of a bar on its top edge."""
    capture = cv2.VideoCapture(str(face_video))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        ok, image = capture.read()
        assert ok
        image[:16] = 0
        image[:16, MARK_STEP * i:MARK_STEP * i + MARK_STEP] = 255
        writer.write(image)
    writer.release()
    return path


def frame_index(image) -> int:
    """Read back the index drawn by `marked_camera_video`."""
    column = image[:16].astype(np.float32).mean(axis=(0, 2))        # (640,) brightness per column
    return int(np.argmax(np.convolve(column, np.ones(MARK_STEP), "valid"))) // MARK_STEP


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, face_video):
    """Record 3.2 s of a stereo 44.1 kHz track in 1.5 s clips: two clips, the 0.2 s tail dropped."""
    folder = tmp_path_factory.mktemp("record")
    camera = marked_camera_video(face_video, folder / "camera.mp4")
    rate = 44100
    t = np.arange(round(3.2 * rate)) / rate
    track = (0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1)).astype(np.float32)
    track[:, 0] *= np.minimum(1.0, t)          # a fade-in, so each span of the file is distinct
    sf.write(folder / "track.wav", track, rate)
    lines = []
    clips = record_session(folder / "track.wav", folder / "DATA", Settings(), camera=str(camera),
                           clip_seconds=CLIP, caption="two sine tones", file_sink=True, progress=lines.append)
    return folder, track, rate, clips, lines


def video_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


def test_clips_are_in_the_training_layout(recorded):
    folder, track, rate, clips, lines = recorded
    assert len(clips) == 2 and len(lines) == 2
    found, problems = find_clips(folder / "DATA")
    assert problems == [] and [c.name for c in found] == [c.folder.name for c in clips]
    for clip, source in zip(clips, found):
        assert source.video.name == "take.mp4" and source.audio.name == "music.wav"
        assert source.caption == "two sine tones"
        assert clip.frames == round(CLIP * 30)
        capture = cv2.VideoCapture(str(source.video))
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == clip.frames
        music, music_rate = sf.read(source.audio, dtype="float32", always_2d=True)
        assert music_rate == rate and music.shape == (round(CLIP * rate), 2)
        start = round(clip.start * rate)       # exactly the span of the original track
        np.testing.assert_allclose(music, track[start:start + music.shape[0]], atol=1e-4)
    assert not list((folder / "DATA").glob(".*"))   # no partial folders or temporary files left


def test_video_is_aligned_with_the_music(recorded):
    """Clip k starts k * 1.5 s into the track, so its frames show the camera from k * 1.5 s on."""
    _, _, _, clips, _ = recorded
    for k, clip in enumerate(clips):
        shown = [frame_index(image) for image in video_frames(clip.folder / "take.mp4")]
        expected = np.arange(len(shown)) + round(k * CLIP * 30)
        assert np.abs(np.array(shown) - expected).max() <= 2, shown    # within 2 frames (67 ms)


def test_prepare_accepts_the_recorded_clips(recorded, tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen
    from expotion_live.train.prepare import prepare_dataset

    folder, *_ = recorded
    musicgen = MusicGen.load(tiny_musicgen_dir)
    report = prepare_dataset(folder / "DATA", musicgen, Settings().tracking, folder / "DATA" / ".expotion_cache",
                             min_seconds=1.0, log=lambda line: None, progress=False)
    assert report.skipped == []
    assert [name for name, _ in report.prepared] == sorted(c.folder.name for c in recorded[3])
    assert all(frames >= 70 for _, frames in report.prepared)     # ~1.5 s at 50 Hz


def test_plan_keeps_whole_clips_and_a_long_enough_tail():
    assert plan_clips(25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert plan_clips(21, 10) == [(0, 10), (10, 20)]
    assert plan_clips(1, 10) == []


def test_bad_inputs_are_clear_errors(tmp_path, face_video):
    with pytest.raises(RecordError, match="does not exist"):
        record_session(tmp_path / "missing.wav", tmp_path / "DATA", Settings(), camera=str(face_video),
                       file_sink=True)
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    with pytest.raises(RecordError, match="cannot read music file"):
        record_session(tmp_path / "noise.wav", tmp_path / "DATA", Settings(), camera=str(face_video),
                       file_sink=True)
    sf.write(tmp_path / "short.wav", np.zeros(16000, np.float32), 32000)
    with pytest.raises(RecordError, match="shorter than"):
        record_session(tmp_path / "short.wav", tmp_path / "DATA", Settings(), camera=str(face_video),
                       file_sink=True)
    sf.write(tmp_path / "ok.wav", np.zeros(96000, np.float32), 32000)
    with pytest.raises(RecordError, match="does not exist"):
        record_session(tmp_path / "ok.wav", tmp_path / "DATA", Settings(), camera=str(tmp_path / "nope.mp4"),
                       file_sink=True)
    assert not (tmp_path / "DATA").exists()


def test_record_command_reports_one_line(tmp_path, capsys):
    import argparse

    from expotion_live.commands import record

    parser = argparse.ArgumentParser()
    record.add_parser(parser.add_subparsers())
    args = parser.parse_args(["record", "--music", str(tmp_path / "none.wav"), "--out", str(tmp_path / "DATA"),
                              "--file-sink"])
    assert args.handler(args, Settings()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.wav does not exist" in err


def test_record_old_device_flag_names_the_audio_output_flag(tmp_path, capsys):
    import argparse

    from expotion_live.commands import record

    parser = argparse.ArgumentParser()
    record.add_parser(parser.add_subparsers())
    args = parser.parse_args(["record", "--music", "x.wav", "--out", str(tmp_path / "DATA"), "--device", "pulse"])
    assert args.handler(args, Settings()) == 1
    assert "--audio-output NAME" in capsys.readouterr().err and not (tmp_path / "DATA").exists()


def test_record_through_a_real_portaudio_device(tmp_path, face_video, null_sink):
    """The same take played through PortAudio on the PulseAudio null sink. That sink drains slower
    than real time (docs/architecture.md), so only the layout is checked here; timing is checked above
    against the wall-clock sink."""
    sf.write(tmp_path / "track.wav", 0.2 * np.sin(np.linspace(0, 2000, 32000 * 2)).astype(np.float32), 32000)
    settings = settings_mod.override(Settings(), {"audio.device": null_sink})
    clips = record_session(tmp_path / "track.wav", tmp_path / "DATA", settings, camera=str(face_video),
                           clip_seconds=2.0)
    found, problems = find_clips(tmp_path / "DATA")
    assert problems == [] and len(found) == len(clips) == 1 and found[0].caption == ""
    assert clips[0].frames == 60 and sf.info(found[0].audio).duration == pytest.approx(2.0)


def test_a_take_that_cannot_be_opened_leaves_nothing_behind(tmp_path):
    from expotion_live.train.record import ClipWriter

    with pytest.raises(RecordError, match="cannot write MPEG-4 video"):
        ClipWriter(tmp_path / "DATA" / "clip_001", 0.0, 10.0, 30.0, (0, 0))   # OpenCV refuses a 0x0 video
    assert list((tmp_path / "DATA").iterdir()) == []                          # no partial folder, no take.mp4

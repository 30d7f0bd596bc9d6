"""`prepare` on real videos through the live tracker: usable clips cached, bad ones skipped and listed."""
from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest
import soundfile

from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM
from expotion_live.settings import TrackingSettings
from expotion_live.train.dataset import cache_dir_for, find_clips, load_clip, read_index
from expotion_live.train.prepare import prepare_dataset

SECONDS = 2.0


def clicks(seconds: float, bpm: float, sample_rate: int = 32000) -> np.ndarray:
    """A click track: short decaying noise bursts on every beat."""
    audio = np.zeros(int(seconds * sample_rate), np.float32)
    burst = np.random.default_rng(0).normal(0, 0.5, 800).astype(np.float32) * np.exp(-np.arange(800) / 150)
    for start in np.arange(0, seconds, 60 / bpm):
        i = int(start * sample_rate)
        audio[i:i + 800] += burst[:len(audio) - i]
    return audio


def blank_video(path, seconds: float, fps: int = 15) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        writer.write(np.full((240, 320, 3), 40 + i, np.uint8))
    writer.release()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from expotion_live.capture.demo import make_face_video

    root = tmp_path_factory.mktemp("performer")
    face = make_face_video(root / "face.mp4", seconds=SECONDS, fps=15)

    (root / "with_wav").mkdir()
    shutil.copy(face, root / "with_wav" / "take.mp4")
    soundfile.write(root / "with_wav" / "music.wav", clicks(SECONDS, 120), 32000)
    (root / "with_wav" / "caption.txt").write_text("upbeat pop song with claps\n")

    (root / "own_track").mkdir()        # the music is the video's own audio track
    soundfile.write(root / "track.wav", clicks(SECONDS, 90, 44100), 44100)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(face), "-i", str(root / "track.wav"), "-c:v", "copy",
                    "-c:a", "aac", "-shortest", str(root / "own_track" / "take.mp4")], check=True)

    (root / "corrupt").mkdir()
    (root / "corrupt" / "take.mp4").write_bytes(face.read_bytes()[:2000])
    soundfile.write(root / "corrupt" / "music.wav", clicks(SECONDS, 120), 32000)

    (root / "short").mkdir()
    shutil.copy(face, root / "short" / "take.mp4")
    soundfile.write(root / "short" / "music.wav", clicks(0.4, 120), 32000)   # music ends early

    (root / "faceless").mkdir()
    blank_video(root / "faceless" / "take.mp4", SECONDS)
    soundfile.write(root / "faceless" / "music.wav", clicks(SECONDS, 120), 32000)

    (root / "two_videos").mkdir()
    for name in ("a.mp4", "b.mov"):
        shutil.copy(face, root / "two_videos" / name)
    face.unlink()
    (root / "track.wav").unlink()
    return root


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")


def test_prepare_caches_good_clips_and_lists_the_rest(dataset, musicgen):
    logs: list[str] = []
    cache = cache_dir_for(dataset)
    report = prepare_dataset(dataset, musicgen, TrackingSettings(), cache, min_seconds=1.0, log=logs.append,
                             progress=False)

    assert sorted(name for name, _ in report.prepared) == ["own_track", "with_wav"]
    reasons = dict(report.skipped)
    assert sorted(reasons) == ["corrupt", "faceless", "short", "two_videos"]
    assert reasons["corrupt"].startswith("unreadable")
    assert reasons["short"].startswith("too short: 0.4 s")
    assert reasons["faceless"].startswith("no face")
    assert reasons["two_videos"].startswith("expected one video")
    assert any(line.startswith("skipped faceless: no face") for line in logs)

    clip = load_clip(cache, "with_wav")
    T = clip.n_frames
    assert abs(T - SECONDS * 50) <= 3                       # the 50 Hz grid over the clip
    assert clip.face.shape == (T, FACE_DIM) and clip.motion.shape == (T, MOTION_DIM)
    assert clip.flow.shape == (T, *FLOW_SHAPE) and clip.codes.shape == (4, T)
    assert clip.face[:, -1].mean() > 0.8                    # face_found on the real face video
    assert clip.caption == "upbeat pop song with claps"
    np.testing.assert_array_equal(clip.codes, musicgen.codec.encode(
        clicks(SECONDS, 120)[None, :T * 640])[0].numpy())  # EnCodec codes of the music itself
    assert [c["name"] for c in read_index(cache)["clips"]] == ["own_track", "with_wav"]

    # A second run reuses the cache; a changed caption redoes only that clip.
    again = prepare_dataset(dataset, musicgen, TrackingSettings(), cache, min_seconds=1.0, log=logs.append,
                            progress=False)
    assert again.prepared == [] and sorted(n for n, _ in again.reused) == ["own_track", "with_wav"]
    (dataset / "with_wav" / "caption.txt").write_text("calm ambient piano")
    third = prepare_dataset(dataset, musicgen, TrackingSettings(), cache, min_seconds=1.0, log=logs.append,
                            progress=False)
    assert [n for n, _ in third.prepared] == ["with_wav"]
    assert load_clip(cache, "with_wav").caption == "calm ambient piano"


def test_find_clips_rejects_a_missing_folder(tmp_path):
    from expotion_live.train.dataset import DatasetError

    with pytest.raises(DatasetError, match="does not exist"):
        find_clips(tmp_path / "nope")

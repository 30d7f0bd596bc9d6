"""The paper's path: its dataset imported as published, its features as an input, and Table 1 as one command.

The dataset is made here in the authors' layout (videos under clips/, music beside them,
RAFT features as .pt tensors, train.lst / test.lst lines as in their repository), tiny.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from expotion_live.features.external import ExternalFeatures, read_features, write_features
from expotion_live.model.adaptor import AdaptorConfig, AdaptorError
from expotion_live.settings import TrackingSettings
from expotion_live.train.dataset import DatasetError, cache_dir_for, load_clip, read_index, write_index
from expotion_live.train.importer import import_dataset, parse_line

REPO = Path(__file__).resolve().parents[1]
SR = 32000
AUTHORS = "/l/users/someone/human-music-moves/v1"
CLIPS = {"7.mp4_ZealousDolphin_2025-03-03T12-47-51_clip1": ("7", "train"),
         "89.mp4_NiceMonkey_2025-03-01T05-49-55_clip19": ("89", "train"),
         "93.mp4_EnergeticMonkey_2025-03-01T10-31-44_clip13": ("93", "test"),
         "67.mp4_LuckyGoose_2025-02-16T07-08-58_clip2": ("67", "train")}
RAFT_WIDTH = 6


def lst_line(name: str, audio_id: str) -> str:
    number = name.rsplit("_clip", 1)[1]
    info = {"audio_id": audio_id, "caption": f"<s> The music is an instrumental piece number {audio_id}.\n\n"
                                             f"It is upbeat.</s>"}
    return f"{AUTHORS}/raft_5fps/{name}.pt|{AUTHORS}/audio_rvq/{audio_id}_clip{number}.wav.npy|{info!r}\n"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """SRC (videos, music, RAFT features) and the authors' lists, one listed clip without its video."""
    from expotion_live.testing.face_video import make_face_video

    root = tmp_path_factory.mktemp("hmm")
    src = root / "human-music-moves" / "v1"
    (src / "clips").mkdir(parents=True)
    (src / "audio").mkdir()
    (root / "raft_5fps").mkdir()
    face = make_face_video(root / "face.mp4", seconds=1.5, fps=10, size=(320, 240))
    rng = np.random.default_rng(0)
    lines = {"train": [], "test": []}
    for i, (name, (audio_id, split)) in enumerate(CLIPS.items()):
        shutil.copy(face, src / "clips" / f"{name}.mp4")
        number = name.rsplit("_clip", 1)[1]
        t = np.arange(int(1.5 * SR)) / SR
        soundfile.write(src / "audio" / f"{audio_id}_clip{number}.wav", 0.3 * np.sin(2 * np.pi * 200 * (i + 1) * t), SR)
        torch.save(torch.from_numpy(rng.normal(size=(8, RAFT_WIDTH)).astype(np.float32)),   # 1.5 s at 5 fps (+)
                   root / "raft_5fps" / f"{name}.pt")
        lines[split].append(lst_line(name, audio_id))
    lines["test"].append(lst_line("5.mp4_Gone_2025-01-01T00-00-00_clip1", "5"))        # no video anywhere
    lists = root / "lists"
    lists.mkdir()
    for split, text in lines.items():
        (lists / f"{split}.lst").write_text("".join(text))
    return root, lists


def test_a_line_of_the_authors_lists_gives_the_clip_its_music_and_caption():
    clip = parse_line(lst_line("7.mp4_ZealousDolphin_2025-03-03T12-47-51_clip1", "7"), "train", "train.lst:1")
    assert clip.name == "7.mp4_ZealousDolphin_2025-03-03T12-47-51_clip1" and clip.audio == "7_clip1"
    assert clip.caption == "The music is an instrumental piece number 7. It is upbeat."
    with pytest.raises(DatasetError, match="train.lst:3: expected FEATURES|CODES"):
        parse_line("a.pt|b.npy|{'caption': ", "train", "train.lst:3")


def test_import_keeps_the_authors_clips_captions_split_and_features(published, tmp_path):
    root, lists = published
    dst = tmp_path / "dataset"
    logs = []
    report = import_dataset(root / "human-music-moves", dst, lists, {"raft": root / "raft_5fps"}, log=logs.append)
    assert sorted(report.imported) == sorted(CLIPS)
    assert report.skipped == [("5.mp4_Gone_2025-01-01T00-00-00_clip1",
                               f"no video 5.mp4_Gone_2025-01-01T00-00-00_clip1.mp4 under {root / 'human-music-moves'}")]
    name = "93.mp4_EnergeticMonkey_2025-03-01T10-31-44_clip13"
    assert sorted(p.name for p in (dst / name).iterdir()) == ["caption.txt", "music.wav", "raft.features.npz",
                                                               "take.mp4"]
    assert (dst / name / "caption.txt").read_text() == "The music is an instrumental piece number 93. It is upbeat.\n"
    raft = read_features(dst / name / "raft.features.npz")
    assert raft.rate == 5.0 and raft.values.shape == (8, RAFT_WIDTH)
    assert json.loads((dst / "split.json").read_text())["test"] == [name]
    assert "4 clips in" in logs[-1] and "(3 train, 1 test), 1 skipped" in logs[-1]
    stamp = (dst / name / "take.mp4").stat().st_mtime_ns
    import_dataset(root / "human-music-moves", dst, lists, {"raft": root / "raft_5fps"}, log=logs.append)
    assert (dst / name / "take.mp4").stat().st_mtime_ns == stamp          # again: nothing redone
    with pytest.raises(DatasetError, match="train.lst not found: give --lists"):
        import_dataset(root / "human-music-moves", dst)


def test_the_download_is_real_code_that_fails_offline_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "expotion_live.cli", "import", "human-music-moves",
                             str(tmp_path / "src"), str(tmp_path / "dst"), "--download"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("expotion-live:")]
    assert "mbzmusic/human-music-moves" in line and "HF_HUB_OFFLINE" in line and "resumes" in line
    assert "Traceback" not in result.stderr


def test_external_features_follow_eq_1_at_any_rate_and_width(tmp_path):
    steps = np.array([[0.0, 10.0], [1.0, 20.0], [3.0, 40.0]], np.float32)    # 5 fps: 0, 0.2, 0.4 s
    grid = ExternalFeatures(steps, 5.0).resample(25)                          # 50 Hz: 0.5 s
    assert grid.shape == (25, 2)
    np.testing.assert_allclose(grid[0], [0.0, 10.0])
    np.testing.assert_allclose(grid[5], [0.5, 15.0])         # t = 0.1 s: halfway, eq. (1)
    np.testing.assert_allclose(grid[10], [1.0, 20.0])
    np.testing.assert_allclose(grid[13], [1.6, 26.0])        # α = 0.3 between steps 1 and 2
    np.testing.assert_allclose(grid[20:], [[3.0, 40.0]] * 5)  # past the last step it holds
    sub = write_features(tmp_path / "s.features.npz", np.arange(24, dtype=np.float32).reshape(2, 4, 3), 5.0)
    flat = read_features(sub)                                 # (T, S, D): S sub-steps, flattened
    assert flat.rate == 20.0 and flat.values.shape == (8, 3)
    (tmp_path / "bad.features.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="is not a features file"):
        read_features(tmp_path / "bad.features.npz")
    with pytest.raises(ValueError, match="rate 0.0 must be a positive"):
        write_features(tmp_path / "z.features.npz", steps, 0.0)
    with pytest.raises(AdaptorError, match="flow CNN must be off"):
        AdaptorConfig(motion_source="raft")
    with pytest.raises(AdaptorError, match="feature source 'RAFT!'"):
        AdaptorConfig(motion_source="RAFT!", flow_cnn=False)


@pytest.fixture(scope="module")
def prepared(published, tmp_path_factory, tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen
    from expotion_live.train.prepare import prepare_dataset

    root, lists = published
    dst = tmp_path_factory.mktemp("imported") / "dataset"
    import_dataset(root / "human-music-moves", dst, lists, {"raft": root / "raft_5fps"}, log=lambda m: None)
    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    report = prepare_dataset(dst, musicgen, TrackingSettings(), cache_dir_for(dst), min_seconds=1.0,
                             log=lambda m: None, progress=False)
    assert not report.skipped, report.skipped
    return dst


def test_prepare_keeps_the_imported_split_and_caches_the_features_at_50_hz(prepared):
    cache = cache_dir_for(prepared)
    index = read_index(cache)
    assert index["test"] == ["93.mp4_EnergeticMonkey_2025-03-01T10-31-44_clip13"]
    from expotion_live.train.sources import load_external

    for entry in index["clips"]:
        clip = load_clip(cache, entry["name"])
        expected = read_features(prepared / entry["name"] / "raft.features.npz").resample(clip.n_frames)
        np.testing.assert_array_equal(load_external(cache, clip, "raft"), expected)


def test_an_adaptor_on_external_motion_trains_evaluates_and_is_refused_live(prepared, tiny_musicgen_dir, tmp_path,
                                                                              capsys):
    from test_train_resume import run_in_process

    from expotion_live.engine.musicgen_source import MusicGenSource
    from expotion_live.model.adaptor import load_adaptor
    from expotion_live.model.generate import MusicGen

    run = tmp_path / "run"
    assert run_in_process("train", str(prepared), "--model", str(tiny_musicgen_dir), "--out", str(run), "--device",
                          "cpu", "--epochs", "1", "--batch-size", "1", "--segment-seconds", "0.6", "--paper-windows",
                          "--inputs", "motion", "--motion-source", "raft", "--quiet") == 0
    config = json.loads((run / "adaptor.json").read_text())["config"]
    assert config["motion_source"] == "raft" and config["motion_dim"] == RAFT_WIDTH and config["flow_cnn"] is False
    assert config["face_source"] == "tracker"
    assert run_in_process("evaluate", str(prepared), "--model", str(tiny_musicgen_dir), "--adaptor", str(run),
                          "--seconds", "0.6", "--top-k", "50", "--quiet", "--json", str(tmp_path / "e.json")) == 0
    assert json.loads((tmp_path / "e.json").read_text())["summary"]["clips"] == 1

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    with pytest.raises(AdaptorError, match="reads raft features from files, which live and video generation "
                                           "cannot compute"):
        MusicGenSource(musicgen, load_adaptor(run, musicgen))
    source = MusicGenSource(musicgen)
    with pytest.raises(AdaptorError, match="reads raft features"):
        source.load_adaptor(str(run))
    assert source.adaptor is None                            # the refused one did not replace anything
    capsys.readouterr()
    assert run_in_process("train", str(prepared), "--model", str(tiny_musicgen_dir), "--out", str(tmp_path / "x"),
                          "--motion-source", "marlin", "--quiet") == 1
    assert "has no 'marlin' features: put marlin.features.npz in its folder" in capsys.readouterr().err


def test_reproduce_tiny_writes_every_row_beside_the_paper_and_resumes(tiny_musicgen_dir, tmp_path, capsys):
    from test_train_resume import prepared_dataset

    from expotion_live import cli
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    data = prepared_dataset(tmp_path / "data", musicgen, n_clips=6, frames=40)
    cache = cache_dir_for(data)
    write_index(cache, read_index(cache) | {"test": ["clip02", "clip05"]})
    out = tmp_path / "out"
    argv = ["reproduce", str(data), "--model", str(tiny_musicgen_dir), "--device", "cpu", "--out", str(out), "--tiny"]
    assert cli.main(argv + ["--rows", "musicgen,face"]) == 0
    assert sorted(p.name for p in (out / "evaluations").iterdir()) == ["face.json", "musicgen.json"]
    first = (out / "evaluations" / "face.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(argv) == 0                                 # again, all rows: the two done are kept
    printed = capsys.readouterr().out
    assert "musicgen: done" in printed and "face: done" in printed
    assert (out / "evaluations" / "face.json").stat().st_mtime_ns == first
    face = json.loads((out / "evaluations" / "face.json").read_text())
    assert face["configuration"] == {"inputs": "face", "captions": True} and face["split"] == "test"
    assert json.loads((out / "runs" / "face" / "adaptor.json").read_text())["config"]["look_ahead"] is None  # paper's
    generic = json.loads((out / "evaluations" / "motion-generic.json").read_text())
    assert generic["configuration"] == {"inputs": "motion", "captions": False}
    assert {c["caption"] for c in generic["clips"]} == {"music with catchy melody"}
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| Run | Input | Prompt | FAD-VGG ↓ | KL-PaSST ↓ | IS ↑ | Tempo err. (BPM) ↓ |")
    names = [line.split(" | ")[0].lstrip("| ") for line in lines[2:12]]
    assert names == ["musicgen", "face", "motion", "face+motion", "motion-generic", "paper: musicgen",
                     "paper: face", "paper: motion (raft)", "paper: face+motion (synchformer)",
                     "paper: motion-generic (raft)"]
    assert lines[7].startswith("| paper: musicgen | MusicGen (text only) | Caption | 2.76 | 0.79 | 1.54 | 35.84 | 0.33")
    assert lines[2].startswith("| musicgen | MusicGen (text only) | Caption | – | – | – |")
    assert (out / "table.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(argv + ["--rows", "nope"]) == 2


def test_prepare_redoes_a_clip_whose_features_changed_or_whose_cached_copy_is_damaged(prepared, tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen
    from expotion_live.train.prepare import prepare_dataset
    from expotion_live.train.sources import load_external

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    cache = cache_dir_for(prepared)
    changed, damaged = sorted(CLIPS)[:2]
    write_features(prepared / changed / "raft.features.npz", np.ones((8, RAFT_WIDTH), np.float32), 5.0)
    (cache / "clips" / damaged / "external_raft.npy").write_bytes(b"\x93NUMPY broken")
    logs = []
    report = prepare_dataset(prepared, musicgen, TrackingSettings(), cache, min_seconds=1.0, log=logs.append,
                             progress=False)
    assert sorted(name for name, _ in report.prepared) == sorted([changed, damaged])
    assert any(line.startswith(f"rebuilding {damaged}:") and "damaged" in line for line in logs)
    np.testing.assert_array_equal(load_external(cache, load_clip(cache, changed), "raft"), 1.0)
    assert read_index(cache)["test"] == ["93.mp4_EnergeticMonkey_2025-03-01T10-31-44_clip13"]

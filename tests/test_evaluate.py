"""Rhythm metrics with real librosa beat tracking and mir_eval, and the `evaluate` command end to end."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from expotion_live.train.evaluate import rhythm_scores

SR = 32000


def clicks(seconds: float, bpm: float, offset: float = 0.0) -> np.ndarray:
    audio = np.zeros(int(seconds * SR), np.float32)
    burst = np.random.default_rng(0).normal(0, 0.5, 800).astype(np.float32) * np.exp(-np.arange(800) / 150)
    for start in np.arange(offset, seconds, 60 / bpm):
        i = int(start * SR)
        audio[i:i + 800] += burst[:len(audio) - i]
    return audio


def test_same_rhythm_scores_perfectly_and_a_different_tempo_does_not():
    same = rhythm_scores(clicks(8, 120), clicks(8, 120), SR)
    assert same.tempo_reference == pytest.approx(120, abs=3)
    assert same.tempo_error < 1.0 and same.beat_f1 > 0.95

    slower = rhythm_scores(clicks(8, 90), clicks(8, 120), SR)
    assert slower.tempo_generated == pytest.approx(90, abs=3)
    assert slower.tempo_error == pytest.approx(30, abs=4)
    assert slower.beat_f1 < 0.6

    # Same tempo, off the beat by half a period: the tempo agrees, the beats do not.
    offbeat = rhythm_scores(clicks(8, 120, offset=0.25), clicks(8, 120), SR)
    assert offbeat.tempo_error < 3.0 and offbeat.beat_f1 < 0.3


def test_evaluate_command_writes_scores_for_base_and_adaptor(tiny_musicgen_dir, tmp_path, capsys):
    import torch

    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor
    from expotion_live.model.generate import MusicGen
    from expotion_live.settings import Settings
    from expotion_live.train import commands
    from test_train_resume import prepared_dataset

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    data = prepared_dataset(tmp_path / "data", musicgen, n_clips=1, frames=40)
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(flow_channels=(8, 16), flow_dim=32, max_frames=64), musicgen.decoder)
    with torch.no_grad():
        adaptor.gates.fill_(1.0)
    save_adaptor(adaptor, tmp_path / "adaptor")

    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    for name, extra in (("base", []), ("adapted", ["--adaptor", str(tmp_path / "adaptor")])):
        args = parser.parse_args(["evaluate", str(data), "--model", str(tiny_musicgen_dir), "--split", "all",
                                  "--seconds", "0.6", "--top-k", "50", "--quiet", "--json", str(tmp_path / f"{name}.json"),
                                  "--audio-out", str(tmp_path / name), *extra])
        assert args.handler(args, Settings()) == 0
    table = capsys.readouterr().out
    assert "tempo err" in table and "mean" in table

    base, adapted = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("base", "adapted"))
    for report in (base, adapted):
        assert report["summary"]["clips"] == 1
        assert [c["clip"] for c in report["clips"]] == ["clip00"]
        for clip in report["clips"]:
            assert clip["seconds"] == 0.6 and 0.0 <= clip["beat_f1"] <= 1.0 and np.isfinite(clip["tempo_error"])
        assert "CLAP" in report["not_computed"]
    assert sorted(p.name for p in (tmp_path / "adapted").iterdir()) == ["clip00.wav"]


def test_evaluate_reports_a_bad_adaptor_in_one_line(tiny_musicgen_dir, tmp_path, capsys):
    from expotion_live.model.generate import MusicGen
    from expotion_live.settings import Settings
    from expotion_live.train import commands
    from test_train_resume import prepared_dataset

    data = prepared_dataset(tmp_path / "data", MusicGen.load(tiny_musicgen_dir, precision="fp32"), n_clips=1, frames=30)
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(data), "--model", str(tiny_musicgen_dir), "--split", "all",
                              "--adaptor", str(tmp_path / "missing"), "--quiet"])
    assert args.handler(args, Settings()) == 1
    err = capsys.readouterr().err
    assert err.startswith("expotion-live: adaptor checkpoint") and "does not exist" in err

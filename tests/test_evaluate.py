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
    from expotion_live.commands import train as commands
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
    from expotion_live.commands import train as commands
    from test_train_resume import prepared_dataset

    data = prepared_dataset(tmp_path / "data", MusicGen.load(tiny_musicgen_dir, precision="fp32"), n_clips=1, frames=30)
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(data), "--model", str(tiny_musicgen_dir), "--split", "all",
                              "--adaptor", str(tmp_path / "missing"), "--quiet"])
    assert args.handler(args, Settings()) == 1
    err = capsys.readouterr().err
    assert err.startswith("expotion-live: adaptor checkpoint") and "does not exist" in err

    args = parser.parse_args(["evaluate", str(data), "--model", str(tiny_musicgen_dir), "--quiet"])
    assert args.handler(args, Settings()) == 1       # the default, the test split, is empty in a one-clip dataset
    assert capsys.readouterr().err.startswith("expotion-live: no test clips in ")


# --- FAD, KL and CLAP: the maths on embeddings made here, the models as tiny random transformers folders ---


def test_frechet_distance_matches_the_gaussian_closed_forms():
    from expotion_live.train.metrics import fad, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))          # correlated dimensions
    assert fad(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert fad(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-9)   # same covariance: |mu_a - mu_b|²
    centred = a - a.mean(axis=0)
    cov = np.cov(centred, rowvar=False)
    assert fad(3.0 * centred, centred) == pytest.approx(4.0 * np.trace(cov), rel=1e-9)   # (k - 1)² Tr(S)
    # Diagonal covariances: |mu_a - mu_b|² + sum (sigma_a - sigma_b)².
    assert frechet_distance(np.zeros(2), np.diag([4.0, 9.0]), np.array([1.0, 1.0]), np.diag([1.0, 1.0])) == \
        pytest.approx(2.0 + 1.0 + 4.0)
    # Non-commuting covariances against scipy's general matrix square root.
    from scipy.linalg import sqrtm

    s1, s2 = np.cov(a, rowvar=False), np.cov(rng.normal(size=(50, 6)), rowvar=False)
    expected = np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(expected, rel=1e-6)


def test_fad_needs_two_embeddings_of_one_size():
    from expotion_live.train.metrics import MetricsError, fad

    with pytest.raises(MetricsError, match="at least 2 embeddings.*evaluate more clips"):
        fad(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(MetricsError, match="differ"):
        fad(np.zeros((3, 4)), np.zeros((3, 5)))


def test_kl_and_clap_score_maths():
    from expotion_live.train.metrics import kl_divergence, paired_cosine

    logits = np.random.default_rng(1).normal(size=(4, 10))
    assert kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(logits, logits + 5.0) == pytest.approx(0.0, abs=1e-12)   # softmax ignores a shift
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    assert kl_divergence(np.log(p)[None], np.log(q)[None]) == pytest.approx(expected)
    assert kl_divergence(np.log(q)[None], np.log(p)[None]) != pytest.approx(expected)  # not symmetric
    text = np.array([[1.0, 0.0], [0.0, 2.0]])
    audio = np.array([[3.0, 0.0], [1.0, 1.0]])
    assert paired_cosine(text, audio) == pytest.approx((1.0 + np.sqrt(0.5)) / 2)


def test_metric_models_are_read_from_a_local_folder_with_a_clear_error(tmp_path):
    from expotion_live.train.metrics import AudioClassifier, Clap, MetricsError

    with pytest.raises(MetricsError, match=r"audio classifier folder .*nope has no config.json.*nothing is downloaded"):
        AudioClassifier(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(MetricsError, match="CLAP model folder .*half has no preprocessor_config.json"):
        Clap(tmp_path / "half")


@pytest.fixture(scope="module")
def metric_models(tmp_path_factory):
    """A tiny random AST tagger and CLAP, saved as the hub's folders are."""
    import torch
    from transformers import (ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ClapConfig,
                              ClapFeatureExtractor, ClapModel)

    from expotion_live.testing.random_musicgen import _train_tokenizer

    root = tmp_path_factory.mktemp("metric_models")
    torch.manual_seed(0)
    tagger = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       max_length=100, num_labels=7)
    ASTForAudioClassification(tagger).save_pretrained(root / "ast")
    ASTFeatureExtractor(max_length=100).save_pretrained(root / "ast")
    tokenizer = _train_tokenizer(200)
    ClapModel(ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64),
        audio_config=dict(hidden_size=32, depths=[1, 1], num_heads=[2, 2], patch_embeds_hidden_size=16,
                          num_mel_bins=64, projection_hidden_size=32),
        projection_dim=16)).save_pretrained(root / "clap")
    tokenizer.save_pretrained(root / "clap")
    ClapFeatureExtractor(feature_size=64, truncation="rand_trunc").save_pretrained(root / "clap")
    return root


def test_audio_metrics_with_real_models(metric_models):
    from expotion_live.train.metrics import AudioClassifier, Clap, audio_metrics

    classifier, clap = AudioClassifier(metric_models / "ast"), Clap(metric_models / "clap")
    music = [clicks(1.0, bpm) for bpm in (90, 120, 150)]
    noise = [np.random.default_rng(i).normal(0, 0.3, SR).astype(np.float32) for i in range(3)]
    same = audio_metrics(music, music, ["drums"] * 3, SR, classifier, None)
    assert same["fad"] == pytest.approx(0.0, abs=1e-6) and same["kl"] == pytest.approx(0.0, abs=1e-9)
    other = audio_metrics(noise, music, ["drums", "noise", "drums"], SR, classifier, clap)
    assert other["fad"] > 1e-4 and other["kl"] > 0.0 and -1.0 <= other["clap"] <= 1.0


@pytest.mark.parametrize("inputs, ignored", [("face", ("motion", "flow")), ("motion", ("face",))])
def test_an_ablated_adaptor_ignores_what_it_leaves_out(tiny_musicgen_dir, inputs, ignored):
    import torch

    from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(flow_channels=(8,), flow_dim=16, max_frames=32, inputs=inputs),
                               musicgen.decoder)
    rng = np.random.default_rng(0)
    shapes = {"face": (1, 10, FACE_DIM), "motion": (1, 10, MOTION_DIM), "flow": (1, 10, *FLOW_SHAPE)}

    def prefix(**changed) -> torch.Tensor:
        x = {k: torch.from_numpy(np.random.default_rng(k == "face").normal(size=s).astype(np.float32))
             for k, s in shapes.items()} | changed
        return adaptor.adapters(x["face"], x["motion"], x["flow"])[-1].k_p

    base = prefix()
    for name in ignored:
        torch.testing.assert_close(prefix(**{name: torch.from_numpy(rng.normal(size=shapes[name]).astype(np.float32))}),
                                   base, rtol=0, atol=0)
    kept = "face" if inputs == "face" else "motion"
    assert not torch.equal(prefix(**{kept: torch.from_numpy(rng.normal(size=shapes[kept]).astype(np.float32))}), base)
    with pytest.raises(Exception, match="adaptor inputs 'hands' unknown"):
        AdaptorConfig(inputs="hands")


def test_a_tiny_run_trained_evaluated_on_its_test_split_and_reported(tiny_musicgen_dir, metric_models, tmp_path,
                                                                     capsys):
    """train --inputs face --no-captions, evaluate it and the base on the test split, one table of both."""
    import soundfile

    from expotion_live.model.generate import MusicGen
    from expotion_live.train.dataset import cache_dir_for, read_index, write_index
    from test_train_resume import prepared_dataset, run_in_process

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    data = prepared_dataset(tmp_path / "data", musicgen, n_clips=8, frames=40)
    for i in range(8):                        # the clips' folders: FAD and KL compare with the real music files
        (data / f"clip{i:02d}").mkdir()
        (data / f"clip{i:02d}" / "take.mp4").write_bytes(b"")
        soundfile.write(data / f"clip{i:02d}" / "music.wav", clicks(1.0, 80 + 10 * i), SR)
    cache = cache_dir_for(data)
    write_index(cache, read_index(cache) | {"test_fraction": 0.25, "test": ["clip03", "clip06"]})

    run = tmp_path / "run"
    assert run_in_process("train", str(data), "--model", str(tiny_musicgen_dir), "--out", str(run), "--device", "cpu",
                          "--epochs", "1", "--batch-size", "2", "--segment-seconds", "0.6", "--val-fraction", "0.2",
                          "--inputs", "face", "--no-captions", "--paper-windows", "--quiet") == 0
    out = capsys.readouterr().out
    assert "5 training clips, 1 validation clips (2 test clips held out)" in out
    stored = json.loads((run / "best" / "adaptor.json").read_text())["config"]
    assert stored["inputs"] == "face" and stored["captions"] is False
    seen = json.loads((run / "best" / "clips.json").read_text())
    assert len(seen["train"]) == 5 and len(seen["val"]) == 1
    assert not {"clip03", "clip06"} & set(seen["train"] + seen["val"])

    common = ["--model", str(tiny_musicgen_dir), "--seconds", "0.6", "--top-k", "50", "--quiet",
              "--classifier", str(metric_models / "ast"), "--clap", str(metric_models / "clap")]
    assert run_in_process("evaluate", str(data), *common, "--json", str(tmp_path / "base.json")) == 0
    assert run_in_process("evaluate", str(data), *common, "--adaptor", str(run / "best"),
                          "--json", str(tmp_path / "face-generic.json")) == 0
    base, face = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("base", "face-generic"))
    for report in (base, face):
        assert report["split"] == "test" and [c["clip"] for c in report["clips"]] == ["clip03", "clip06"]
        assert {"fad", "kl", "clap"} <= set(report["summary"]) and report["summary"]["fad"] >= 0.0
    assert [c["caption"] for c in base["clips"]] == ["slow strings", "music with catchy melody"]   # clip03's own
    assert [c["caption"] for c in face["clips"]] == ["music with catchy melody"] * 2                # --no-captions
    assert face["configuration"] == {"inputs": "face", "captions": False}
    capsys.readouterr()

    assert run_in_process("report", str(tmp_path / "base.json"), str(tmp_path / "face-generic.json"),
                          "--out", str(tmp_path / "table")) == 0
    table = (tmp_path / "table" / "table.md").read_text()
    lines = table.splitlines()
    assert lines[0] == "| Run | Input | Prompt | FAD ↓ | KL ↓ | IS ↑ | Tempo err. (BPM) ↓ | Beat F1 ↑ | CLAP ↑ |"
    assert lines[2].startswith(f"| base | MusicGen (text only) | Caption | {base['summary']['fad']:.2f} |")
    assert lines[3].startswith("| face-generic | face | Generic |")
    assert lines[3].endswith(f"| {face['summary']['tempo_error_bpm']:.2f} | {face['summary']['beat_f1']:.2f} | "
                             f"{face['summary']['clap']:.2f} |")
    assert "2 clips of the test split" in table and capsys.readouterr().out.startswith(lines[0])
    assert (tmp_path / "table" / "table.png").read_bytes()[:4] == b"\x89PNG"

    # Runs scored on other clips do not share a table.
    assert run_in_process("evaluate", str(data), "--model", str(tiny_musicgen_dir), "--seconds", "0.6", "--quiet",
                          "--split", "val", "--json", str(tmp_path / "val.json")) == 0
    capsys.readouterr()
    assert run_in_process("report", str(tmp_path / "base.json"), str(tmp_path / "val.json"),
                          "--out", str(tmp_path / "mixed")) == 1
    assert "scored other clips than base.json (val vs test split)" in capsys.readouterr().err

    # A test split chosen anew after training (another --test-fraction) holds a clip the adaptor saw: refused.
    write_index(cache, read_index(cache) | {"test": ["clip03", seen["train"][0]]})
    assert run_in_process("evaluate", str(data), "--model", str(tiny_musicgen_dir), "--quiet",
                          "--adaptor", str(run / "best")) == 1
    assert f"was trained or validated on 1 of the test clips ({seen['train'][0]})" in capsys.readouterr().err


def test_a_live_trained_adaptor_is_evaluated_as_generate_plays_its_video(tiny_musicgen_dir, tmp_path, capsys):
    """evaluate renders a live-trained adaptor's clip through the live engine offline: the same samples as
    `generate --video` of the clip's video with the same seed and prompt (both at evaluate's precision)."""
    import soundfile
    import torch

    from expotion_live.testing.face_video import make_face_video
    from expotion_live.commands import generate as engine_commands
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor
    from expotion_live.model.conditioning import feature_settings, recorded_settings
    from expotion_live.model.generate import MusicGen
    from expotion_live.settings import Settings
    from test_train_resume import run_in_process

    clip = tmp_path / "data" / "take01"
    clip.mkdir(parents=True)
    make_face_video(clip / "take.mp4", seconds=3.0, fps=10.0)
    soundfile.write(clip / "music.wav", clicks(4.0, 100), SR)
    (clip / "caption.txt").write_text("soft synth arpeggio")
    assert run_in_process("prepare", str(tmp_path / "data"), "--model", str(tiny_musicgen_dir), "--min-seconds", "1",
                          "--test-fraction", "0") == 0
    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(flow_channels=(8,), flow_dim=16), musicgen.decoder)
    with torch.no_grad():
        adaptor.gates.fill_(2.0)
    settings = Settings()
    adaptor.trained = {"windows": "live", **recorded_settings(settings.generation, feature_settings(settings.tracking))}
    save_adaptor(adaptor, tmp_path / "adaptor")

    assert run_in_process("evaluate", str(tmp_path / "data"), "--model", str(tiny_musicgen_dir), "--split", "all",
                          "--adaptor", str(tmp_path / "adaptor"), "--seed", "7", "--quiet",
                          "--audio-out", str(tmp_path / "evaluated")) == 0
    parser = argparse.ArgumentParser()
    engine_commands.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "--model", str(tiny_musicgen_dir), "--adaptor", str(tmp_path / "adaptor"),
                              "--video", str(clip / "take.mp4"), "--prompt", "soft synth arpeggio", "--seed", "7",
                              "--precision", "int8", "--out", str(tmp_path / "generated.wav")])
    assert args.handler(args, Settings()) == 0
    capsys.readouterr()
    evaluated, _ = soundfile.read(tmp_path / "evaluated" / "take01.wav", dtype="float32")
    generated, _ = soundfile.read(tmp_path / "generated.wav", dtype="float32")
    assert len(evaluated) == len(generated) > 0
    np.testing.assert_array_equal(evaluated, generated)      # the flow read at its stored precision by both

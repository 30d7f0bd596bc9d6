"""The conditioning contract: its rule on worked examples, what an adaptor records of its training, and the
warning where it is played otherwise."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from expotion_live.model.conditioning import (StreamLayout, chunk_window, differences_warning, feature_settings,
                                              recorded_settings, setting_differences)
from expotion_live.settings import GenerationSettings, TrackingSettings


def test_the_docstrings_example_and_the_streams_first_chunks():
    window = chunk_window(done=10, n=5, K=4, max_frames=64)
    assert (window.newest, window.frames, window.first, window.codes, window.lag_frames) == (18, 19, 0, 15, 8)
    capped = chunk_window(done=600, n=25, K=4, max_frames=512)    # at most the adaptor's rows
    assert (capped.frames, capped.newest, capped.first) == (512, 628, 117)
    assert capped.up_to(600).frames == 600 - 117 + 1


def test_a_layout_slides_to_its_context_when_a_chunk_would_not_fit():
    layout = StreamLayout(window=50, context=20, K=4)
    windows = list(layout.windows([5, 10, 10, 10, 10, 10], max_frames=50))
    assert [w.done for w in windows] == [0, 5, 15, 25, 35, 20]           # 45 + 10 + 4 > 50: slid to 20
    assert layout.slide_window(10, 50) == chunk_window(20, 10, 4, 50).up_to(20)
    with pytest.raises(ValueError, match="do not fit a stream window of 50"):
        layout.check(30)


def test_recorded_settings_name_what_differs():
    generation, tracking = GenerationSettings(), TrackingSettings()
    trained = recorded_settings(generation, feature_settings(tracking))
    assert setting_differences(trained, generation, tracking) == []
    later = dataclasses.replace(generation, chunk_seconds=0.25, prompt="anything")   # the prompt is free
    smoother = dataclasses.replace(tracking, min_cutoff=0.5)
    assert setting_differences(trained, later, smoother) == ["generation.chunk_seconds (trained 0.5, now 0.25)",
                                                             "tracking.min_cutoff (trained 1.0, now 0.5)"]
    assert setting_differences(trained, later, tracking, windows=False) == []      # the paper's windows
    line = differences_warning("generate", setting_differences({}, generation, tracking))
    assert line.startswith("warning: generate feeds the adaptor differently") and "older adaptor" in line
    assert "\n" not in line and differences_warning("generate", []) is None


def test_an_adaptor_keeps_what_it_was_trained_under_and_old_ones_still_load(tiny_musicgen_dir, tmp_path):
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, load_adaptor, save_adaptor
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    adaptor = ConditionAdaptor(AdaptorConfig(flow_channels=(8,), flow_dim=16), musicgen.decoder)
    adaptor.trained = {"windows": "live", "text_dropout": 0.2,
                       **recorded_settings(GenerationSettings(), feature_settings(TrackingSettings()))}
    save_adaptor(adaptor, tmp_path / "new")
    assert load_adaptor(tmp_path / "new", musicgen).trained == adaptor.trained

    header = json.loads((tmp_path / "new" / "adaptor.json").read_text())      # as format 1 wrote it
    old = {"format": 1, "config": header["config"], "base": header["base"]}
    text = json.dumps(old, indent=2, sort_keys=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in adaptor.state_dict().items()}, str(tmp_path / "adaptor.safetensors"),
              metadata={"expotion_adaptor": text})
    (tmp_path / "adaptor.json").write_text(text + "\n")
    loaded = load_adaptor(tmp_path, musicgen)
    assert loaded.trained == {} and setting_differences(loaded.trained, GenerationSettings(), TrackingSettings())


def test_condition_dropout_trains_the_null_text_at_its_rate(tiny_musicgen_dir, tmp_path):
    import numpy as np

    from expotion_live.model.adaptor import AdaptorConfig
    from expotion_live.model.generate import MusicGen
    from expotion_live.train.config import TrainConfig
    from expotion_live.train.dataset import load_clip, write_clip
    from expotion_live.train.trainer import Trainer
    from test_live_windows import random_window

    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_clip(tmp_path / "cache", f"c{i}", random_window(60, seed=i), rng.integers(0, 2048, (4, 60)),
                   caption="warm pads", source_stamp={})
    clips = [load_clip(tmp_path / "cache", f"c{i}") for i in range(2)]

    def trainer(p):
        return Trainer(musicgen, clips, [], tmp_path / f"run{p}", TrainConfig(batch_size=2, segment_seconds=1.0,
                       live_windows=False, text_dropout=p), AdaptorConfig(flow_channels=(8,), flow_dim=16, max_frames=64),
                       progress=False, log=lambda message: None)

    text = musicgen.encode_text(["warm pads"] * 400)
    dropped = trainer(0.2)._dropped(text, step=3)
    kept = dropped.mask.any(dim=1)
    assert 0.15 < 1 - kept.float().mean().item() < 0.25                     # about the rate
    assert torch.equal(dropped.hidden[~kept], torch.zeros_like(dropped.hidden[~kept]))   # the null text
    assert torch.equal(dropped.hidden[kept], text.hidden[kept])
    assert torch.equal(trainer(0.2)._dropped(text, step=3).mask, dropped.mask)      # drawn from (seed, step)
    assert trainer(0.0)._dropped(text, step=3) is text
    assert trainer(0.2).adaptor.trained["text_dropout"] == 0.2

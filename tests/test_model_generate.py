"""The `MusicGen` facade on the tiny random checkpoint, against transformers' own generate.

Greedy tokens must equal transformers' (with and without CFG), continuation from a
prompt must equal generating straight through, and a seed must reproduce a piece.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from expotion_live.model.generate import MusicGen

PROMPTS = ["warm electronic groove", "sad piano"]  # different lengths: the text mask matters
PAD = 2048


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir) -> MusicGen:
    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def reference(tiny_musicgen_dir):
    model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen_dir).eval()
    return model, AutoProcessor.from_pretrained(tiny_musicgen_dir)


def transformers_greedy(reference, n_frames: int, cfg: float):
    """transformers' greedy codes (B, 4, n_frames) and audio, read from its processed scores.

    `generate` returns only audio, so the tokens are rebuilt the way it picks them: the
    argmax of each step's guided scores, then its own delay mask, then the pads removed.
    """
    model, processor = reference
    inputs = processor(text=PROMPTS, padding=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=n_frames + 3, do_sample=False, guidance_scale=cfg,
                         return_dict_in_generate=True, output_scores=True)
    B = len(PROMPTS)
    raw = torch.cat([torch.full((B * 4, 1), PAD)] + [s.argmax(-1)[:, None] for s in out.scores], dim=1)
    _, mask = model.decoder.build_delay_pattern_mask(raw[:, :1], PAD, max_length=raw.shape[1])
    delayed = model.decoder.apply_delay_pattern_mask(raw, mask)
    return delayed[delayed != PAD].reshape(B, 4, n_frames), out.sequences[:, 0].numpy()


def test_model_facts(musicgen):
    assert musicgen.sample_rate == 32000 and musicgen.frame_rate == 50
    config = musicgen.decoder.config
    assert (config.num_codebooks, config.hidden_size, config.num_hidden_layers) == (4, 64, 2)
    layer = musicgen.decoder.layers[0]
    for name in ("self_attn_layer_norm", "self_attn.q_proj", "self_attn.out_proj", "encoder_attn_layer_norm",
                 "encoder_attn.k_proj", "final_layer_norm", "fc1", "fc2"):
        assert isinstance(layer.get_submodule(name), torch.nn.Module), name


def test_text_condition_matches_transformers(musicgen, reference):
    model, processor = reference
    inputs = processor(text=PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.enc_to_dec_proj(model.text_encoder(**inputs).last_hidden_state) * \
            inputs.attention_mask[..., None]
    text = musicgen.encode_text(PROMPTS)
    assert torch.equal(text.mask, inputs.attention_mask.bool())
    assert ((text.hidden - expected).norm() / expected.norm()).item() < 1e-6


@pytest.mark.parametrize("cfg", [1.0, 3.0], ids=["no-cfg", "cfg3"])
def test_greedy_generation_equals_transformers(musicgen, reference, cfg):
    expected_codes, expected_audio = transformers_greedy(reference, n_frames=20, cfg=cfg)
    codes = musicgen.generate(musicgen.encode_text(PROMPTS), 20, cfg=cfg, greedy=True)
    assert codes.shape == (2, 4, 20) and codes.dtype == torch.long
    assert torch.equal(codes, expected_codes)
    audio = musicgen.decode_audio(codes)
    assert audio.shape == (2, 20 * 640) and audio.dtype == np.float32
    # EnCodec's decoder LSTM runs in bf16 on CPUs with native bf16 (model.codec.Bf16Recurrence): 1e-4 relative
    assert np.linalg.norm(audio - expected_audio) / np.linalg.norm(expected_audio) < 1e-4


def test_guidance_changes_the_tokens(musicgen):
    text = musicgen.encode_text(PROMPTS)
    plain = musicgen.generate(text, 20, cfg=1.0, greedy=True)
    guided = musicgen.generate(text, 20, cfg=3.0, greedy=True)
    assert (plain != guided).float().mean() > 0.1


@pytest.mark.parametrize("cfg", [1.0, 3.0], ids=["no-cfg", "cfg3"])
@pytest.mark.parametrize("n_prompt", [1, 12])  # 12 > 4 codebooks: the prompt spans the whole delay pattern
def test_continuation_equals_straight_through(musicgen, cfg, n_prompt):
    text = musicgen.encode_text(PROMPTS)
    straight = musicgen.generate(text, 24, cfg=cfg, greedy=True)
    continued = musicgen.generate(text, 24 - n_prompt, prompt_codes=straight[:, :, :n_prompt], cfg=cfg, greedy=True)
    assert torch.equal(continued, straight[:, :, n_prompt:])


def test_seed_reproduces_a_piece(musicgen):
    text = musicgen.encode_text(PROMPTS)
    first = musicgen.generate(text, 16, seed=1, top_k=50)
    assert torch.equal(first, musicgen.generate(text, 16, seed=1, top_k=50))
    assert not torch.equal(first, musicgen.generate(text, 16, seed=2, top_k=50))
    # top-k 1 leaves nothing to chance
    assert torch.equal(musicgen.generate(text, 16, seed=3, top_k=1), musicgen.generate(text, 16, greedy=True))


def test_progress_counts_every_step(musicgen):
    calls = []
    musicgen.generate(musicgen.encode_text(PROMPTS[:1]), 10, greedy=True, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 13) for i in range(1, 14)]  # n_frames + 3 closing steps of the delay pattern


def test_bad_requests_are_refused(musicgen):
    text = musicgen.encode_text(PROMPTS)
    with pytest.raises(ValueError, match="n_frames"):
        musicgen.generate(text, 0)
    with pytest.raises(ValueError, match="prompt codes"):
        musicgen.generate(text, 4, prompt_codes=torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        musicgen.generate(text, 4, temperature=0.0)
    with pytest.raises(ValueError, match="positions exceed"):
        musicgen.generate(text, 5000, greedy=True)

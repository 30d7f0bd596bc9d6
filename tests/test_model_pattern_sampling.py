"""The delay pattern as data and the sampling filters, against transformers' own versions."""
from __future__ import annotations

import torch
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM
from transformers.generation.logits_process import (ClassifierFreeGuidanceLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from expotion_live.model.delay_pattern import UNKNOWN, DelayPattern
from expotion_live.model.sampling import filter_logits, guide, sample

P = 99  # pad token for these small examples


def test_worked_example_from_the_docstring():
    frames = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])  # (1, K=3, T=3): a b c / A B C / x y z
    seq = DelayPattern(3, 3, P).build(frames)
    assert seq.tolist() == [[[P, 1, 2, 3, P, P],
                             [P, P, 4, 5, 6, P],
                             [P, P, P, 7, 8, 9]]]


def test_undo_inverts_build_and_marks_frames_to_generate():
    pattern = DelayPattern(4, 10, P)
    codes = torch.randint(0, 50, (2, 4, 10))
    assert torch.equal(pattern.undo(pattern.build(codes)), codes)
    partial = pattern.build(codes[:, :, :6])
    assert torch.equal(pattern.undo(partial)[:, :, :6], codes[:, :, :6])
    assert (pattern.undo(partial)[:, :, 6:] == UNKNOWN).all()
    assert pattern.prefill_length(6) == 7


def test_layout_equals_transformers_delay_mask():
    """transformers' pattern for a 5-frame prompt in a 12-position sequence, pads and all."""
    lm = MusicgenForCausalLM(MusicgenDecoderConfig(vocab_size=P, num_hidden_layers=1, hidden_size=16,
                                                   num_attention_heads=2, ffn_dim=16, num_codebooks=4))
    prompt = torch.randint(0, 50, (2, 4, 5))
    start = torch.full((2, 4, 1), P)
    _, mask = lm.build_delay_pattern_mask(torch.cat([start, prompt], -1).reshape(8, 6), P, max_length=12)
    ours = DelayPattern(4, 12 - 4, P).build(prompt)  # 8 frames fill a 12-position sequence
    assert torch.equal(ours.reshape(8, 12), mask)  # both mark the places to generate with -1


def test_guidance_equals_transformers():
    logits = torch.randn(4, 2048)  # [cond; uncond] rows
    expected = ClassifierFreeGuidanceLogitsProcessor(3.0)(torch.zeros(2, 1, dtype=torch.long), logits)
    assert torch.allclose(guide(logits[:, None], 3.0)[:, 0], expected)


def test_filters_equal_transformers_warpers():
    logits = torch.randn(6, 2048) * 3
    for temperature, top_k, top_p in [(1.0, 250, 0.0), (0.7, 0, 0.9), (1.3, 40, 0.5), (1.0, 0, 0.0)]:
        expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p:
            expected = TopPLogitsWarper(top_p)(None, expected)
        got = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), (temperature, top_k, top_p)
        kept = ~torch.isinf(got)
        assert torch.allclose(got[kept], expected[kept])


def test_samples_stay_inside_the_top_k_and_follow_the_seed():
    logits = torch.randn(8, 4, 2048)
    allowed = logits.topk(5, dim=-1).indices  # (8, 4, 5)
    draws = [sample(logits, top_k=5, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    for tokens in draws:
        assert (allowed == tokens[..., None]).any(-1).all()
    assert len({tuple(t.flatten().tolist()) for t in draws}) > 1
    again = sample(logits, top_k=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, draws[0])
    assert torch.equal(sample(logits, greedy=True), logits.argmax(-1))
    assert torch.equal(sample(logits, top_p=1e-6, generator=torch.Generator()), logits.argmax(-1))

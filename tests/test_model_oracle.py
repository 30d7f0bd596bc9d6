"""Our decoder against transformers' MusicGen on the same random weights (the oracle).

Logits must agree to float32 rounding (||delta|| / ||ref|| < 1e-5) for several shapes and
seeds (including an odd head count), with and without text, through the reference
path and through prefill + cached decode steps.
"""
from __future__ import annotations

import pytest
import torch
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

from expotion_live.model.loading import load_decoder
from expotion_live.model.text import TextCondition

TOLERANCE = 1e-5
VOCAB = 128  # small codebooks keep the heads cheap; the math does not depend on the size

SHAPES = [  # (layers, hidden, heads, ffn, seed)
    (2, 64, 4, 128, 0),
    (3, 48, 3, 96, 1),   # odd head count, head_dim 16
    (1, 40, 5, 72, 2),   # odd head count, head_dim 8
]


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).norm() / ref.norm()).item()


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"L{s[0]}-d{s[1]}-h{s[2]}-seed{s[4]}")
def pair(request, tmp_path_factory):
    """A random transformers MusicgenForCausalLM, saved and loaded into our decoder."""
    layers, hidden, heads, ffn, seed = request.param
    torch.manual_seed(seed)
    config = MusicgenDecoderConfig(vocab_size=VOCAB, num_hidden_layers=layers, hidden_size=hidden,
                                   num_attention_heads=heads, ffn_dim=ffn, num_codebooks=4,
                                   pad_token_id=VOCAB, bos_token_id=VOCAB, max_position_embeddings=256)
    ref = MusicgenForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("causal_lm")
    ref.save_pretrained(path)
    return ref, load_decoder(path)


def random_text(batch: int, hidden: int, seed: int) -> TextCondition:
    """Projected text states with padding in every row but the first, zeroed where padded (as MusicGen does)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 4, 2][:batch])
    mask = torch.arange(7)[None, :] < lengths[:, None]  # (B, S)
    return TextCondition(torch.randn(batch, 7, hidden, generator=g) * mask[..., None], mask)


def reference_logits(ref: MusicgenForCausalLM, codes: torch.Tensor, text: TextCondition | None) -> torch.Tensor:
    B, K, T = codes.shape
    kwargs = {} if text is None else dict(encoder_hidden_states=text.hidden,
                                          encoder_attention_mask=text.mask.long())
    with torch.no_grad():
        logits = ref(input_ids=codes.reshape(B * K, T), **kwargs).logits  # (B*K, T, V)
    return logits.reshape(B, K, T, -1)


def random_codes(batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, VOCAB, (batch, 4, length), generator=g)
    codes[:, :, 0] = VOCAB  # the start token, as generation feeds it
    return codes


@pytest.mark.parametrize("with_text", [False, True], ids=["no-text", "text"])
def test_reference_path_matches_transformers(pair, with_text):
    ref, ours = pair
    codes = random_codes(3, 17, seed=5)
    text = random_text(3, ours.config.hidden_size, seed=6) if with_text else None
    expected = reference_logits(ref, codes, text)
    with torch.no_grad():
        got = ours(codes, text)
    assert got.shape == expected.shape == (3, 4, 17, VOCAB)
    assert relative_error(got, expected) < TOLERANCE


@pytest.mark.parametrize("with_text", [False, True], ids=["no-text", "text"])
def test_cached_decoding_matches_transformers(pair, with_text):
    """Prefill 6 positions, then decode the other 11 one at a time from the static cache."""
    ref, ours = pair
    B, T, n_prefill = 2, 17, 6
    codes = random_codes(B, T, seed=7)
    text = random_text(B, ours.config.hidden_size, seed=8) if with_text else None
    expected = reference_logits(ref, codes, text)  # (B, K, T, V)
    cache = ours.allocate_cache(B, T)
    positions = torch.arange(T)
    with torch.no_grad():
        last = ours.prefill(codes[:, :, :n_prefill], cache, text)
        assert relative_error(last, expected[:, :, n_prefill - 1]) < TOLERANCE
        for p in range(n_prefill, T):
            step = ours.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache)
            assert relative_error(step, expected[:, :, p]) < TOLERANCE, f"position {p}"

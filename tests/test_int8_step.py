"""The int8 decoder's numba step (`int8_step`) against the same decoder's torch layers.

Oracle: `decode_step` with gradients enabled runs the torch modules (the numba step
has no derivative), with the same int8 weights and, the decoder being frozen, the same
int8 projection kernel; with no gradient it runs `Int8DecodeStep`. Both must give the same logits and write the same
cache, with and without text, with adapters, at an even and an uneven head width.
Closeness to fp32 is tests/test_precision.py's job, through this same path.
"""
from __future__ import annotations

import pytest
import torch

from expotion_live.model import int8_step
from expotion_live.model.config import DecoderConfig
from expotion_live.model.decoder import MusicGenDecoder
from expotion_live.model.precision import apply_precision
from expotion_live.model.text import TextCondition


def int8_decoder(hidden: int, heads: int, seed: int = 0) -> MusicGenDecoder:
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=hidden, num_hidden_layers=3,
                           num_attention_heads=heads, ffn_dim=3 * hidden, max_position_embeddings=64)
    decoder = MusicGenDecoder(config).eval().requires_grad_(False)   # frozen, as loaded: no gradient is wanted
    return apply_precision(decoder, "int8", "cpu")


class ScaledQueries:
    """An adapter adding `scale` * q: it sees the queries and its term changes the output."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, q, positions):
        return self.scale * q * (1 + positions.float()[:, None])   # q (B, H, T, Dh), positions (T,)


def decode(decoder, codes, text, adapters, numba: bool, n_prefill: int = 5):
    """Logits of every decoded position (B, K, T - n_prefill, V) and the cache they leave."""
    B, K, T = codes.shape
    cache = decoder.allocate_cache(B, T + 3)
    positions = torch.arange(T)
    with torch.no_grad():
        decoder.prefill(codes[:, :, :n_prefill], cache, text, adapters)
    out = []
    with torch.set_grad_enabled(not numba):
        for p in range(n_prefill, T):
            out.append(decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache, adapters,
                                           attend=cache.attend_length(p)))
    return torch.stack(out, dim=2), cache


@pytest.mark.parametrize("hidden, heads", [(64, 4), (40, 5)])
@pytest.mark.parametrize("with_text", [True, False])
@pytest.mark.parametrize("with_adapters", [False, True])
def test_numba_step_matches_the_torch_layers(hidden, heads, with_text, with_adapters):
    decoder = int8_decoder(hidden, heads)
    assert int8_step.fits(decoder)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 64, (2, 4, 12), generator=g)
    text = TextCondition(torch.randn(2, 6, hidden, generator=g),
                         torch.tensor([[True] * 6, [False] * 6])) if with_text else None  # row 2: the null text
    adapters = [ScaledQueries(0.1), None, ScaledQueries(-0.2)] if with_adapters else None

    ref, ref_cache = decode(decoder, codes, text, adapters, numba=False)
    got, cache = decode(decoder, codes, text, adapters, numba=True)

    assert isinstance(decoder._int8_step, int8_step.Int8DecodeStep)   # the numba path really ran
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.self_k, ref_cache.self_k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cache.self_v, ref_cache.self_v, rtol=1e-5, atol=1e-6)
    if with_adapters:
        plain, _ = decode(decoder, codes, text, None, numba=True)
        assert (got - plain).abs().max() > 1e-3   # the adapters' terms reached the output


def test_only_an_all_int8_cpu_decoder_takes_the_numba_step():
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, ffn_dim=64, max_position_embeddings=16)
    assert not int8_step.fits(MusicGenDecoder(config))
    assert not int8_step.fits(apply_precision(MusicGenDecoder(config), "bf16", "cpu"))
    assert int8_step.fits(apply_precision(MusicGenDecoder(config), "int8", "cpu"))

"""The int8 and int4 decoders' numba step (`int8_step`) against the same decoder's torch layers.

Oracle: the same int8 (int4) decoder on its "cpu-modules" backend (the torch modules, each
projection by the same int8 (int4) kernel) against the "int8-numba" ("int4-numba") backend
that decoder gets on the CPU. Both must give the same logits and write the same cache, with and
without text, with adapters, at an even and an uneven head width. Closeness to fp32 is
tests/test_precision.py's job, through this same path.
"""
from __future__ import annotations

import pytest
import torch

from expotion_live.model.config import DecoderConfig
from expotion_live.model.decoder import MusicGenDecoder
from expotion_live.model.precision import apply_precision
from expotion_live.model.text import TextCondition


def quantized_decoder(hidden: int, heads: int, precision: str = "int8", seed: int = 0) -> MusicGenDecoder:
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=hidden, num_hidden_layers=3,
                           num_attention_heads=heads, ffn_dim=3 * hidden, max_position_embeddings=64)
    decoder = MusicGenDecoder(config).eval().requires_grad_(False)   # frozen, as loaded: no gradient is wanted
    return apply_precision(decoder, precision, "cpu")


class ScaledQueries:
    """An adapter adding `scale` * q: it sees the queries and its term changes the output."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, q, positions):
        return self.scale * q * (1 + positions.float()[:, None])   # q (B, H, T, Dh), positions (T,)


@torch.no_grad()
def decode(decoder, codes, text, adapters, backend: str, n_prefill: int = 5):
    """Logits of every decoded position (B, K, T - n_prefill, V) on `backend`, and the cache they leave."""
    B, K, T = codes.shape
    decoder.choose_backend(backend)
    assert decoder.backend.name == backend
    cache = decoder.allocate_cache(B, T + 3)
    positions = torch.arange(T)
    decoder.prefill(codes[:, :, :n_prefill], cache, text, adapters)
    out = [decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache, adapters,
                               attend_length=cache.attend_length(p)) for p in range(n_prefill, T)]
    return torch.stack(out, dim=2), cache


@pytest.mark.parametrize("hidden, heads", [(64, 4), (40, 5)])
@pytest.mark.parametrize("with_text", [True, False])
@pytest.mark.parametrize("with_adapters", [False, True])
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_numba_step_matches_the_torch_layers(hidden, heads, with_text, with_adapters, precision):
    decoder = quantized_decoder(hidden, heads, precision)
    backend = f"{precision}-numba"
    assert decoder.backend.name == backend   # what apply_precision left it with
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 64, (2, 4, 12), generator=g)
    text = TextCondition(torch.randn(2, 6, hidden, generator=g),
                         torch.tensor([[True] * 6, [False] * 6])) if with_text else None  # row 2: the null text
    adapters = [ScaledQueries(0.1), None, ScaledQueries(-0.2)] if with_adapters else None

    ref, ref_cache = decode(decoder, codes, text, adapters, "cpu-modules")
    got, cache = decode(decoder, codes, text, adapters, backend)

    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.self_k, ref_cache.self_k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cache.self_v, ref_cache.self_v, rtol=1e-5, atol=1e-6)
    if with_adapters:
        plain, _ = decode(decoder, codes, text, None, backend)
        assert (got - plain).abs().max() > 1e-3   # the adapters' terms reached the output


def test_only_an_all_int8_cpu_decoder_takes_the_numba_step():
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, ffn_dim=64, max_position_embeddings=16)
    assert MusicGenDecoder(config).backend.name == "cpu-modules"
    assert apply_precision(MusicGenDecoder(config), "bf16", "cpu").backend.name == "cpu-modules"
    assert apply_precision(MusicGenDecoder(config), "int8", "cpu").backend.name == "int8-numba"
    assert apply_precision(MusicGenDecoder(config), "int4", "cpu").backend.name == "int4-numba"
    with pytest.raises(ValueError, match="Int8Linear"):
        apply_precision(MusicGenDecoder(config), "bf16", "cpu").choose_backend("int8-numba")
    with pytest.raises(ValueError, match="Int4Linear"):
        apply_precision(MusicGenDecoder(config), "int8", "cpu").choose_backend("int4-numba")


def test_a_cast_int8_decoder_keeps_decoding():
    """Cast to bf16 after load, the int8 decoder leaves the numba step (it reads fp32) for SDPA's
    modules, with a head-major cache; cast back, it takes the numba step again, with fresh views."""
    decoder = quantized_decoder(64, 4)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 64, (2, 4, 8), generator=g)
    before, _ = decode(decoder, codes, None, None, "int8-numba")
    for dtype, backend in ((torch.bfloat16, "modules"), (torch.float32, "int8-numba")):
        decoder.to(dtype)
        assert decoder.backend.name == backend
        got, cache = decode(decoder, codes, None, None, backend)
        assert cache.self_k.is_contiguous() == (backend == "modules")
        # the scales were rounded to bf16 on the way: close, not equal
        assert ((got.float() - before).norm() / before.norm()).item() < 2e-2

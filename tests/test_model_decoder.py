"""Our decoder's own contracts: the adaptor hook, the static cache, a capturable decode step."""
from __future__ import annotations

import pytest
import torch

from expotion_live.model.generate import MusicGen
from expotion_live.model.loading import load_decoder
from expotion_live.model.text import TextCondition


@pytest.fixture(scope="module")
def decoder(tiny_musicgen_dir):
    return load_decoder(tiny_musicgen_dir)


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(0)
    return TextCondition(torch.randn(2, 5, 64, generator=g), torch.ones(2, 5, dtype=torch.bool))


def codes_for(T: int, seed: int = 1) -> torch.Tensor:
    codes = torch.randint(0, 2048, (2, 4, T), generator=torch.Generator().manual_seed(seed))
    codes[:, :, 0] = 2048
    return codes


class Recorder:
    """An adapter that records what it is called with and adds `scale` * q."""

    def __init__(self, scale: float):
        self.scale, self.calls = scale, []

    def __call__(self, q, positions):
        self.calls.append((tuple(q.shape), positions.tolist()))
        return self.scale * q


def run_cached(decoder, codes, text, adapters, n_prefill=4):
    """Logits of every position from n_prefill-1 on, via prefill + decode steps."""
    B, K, T = codes.shape
    cache = decoder.allocate_cache(B, T)
    positions = torch.arange(T)
    out = [decoder.prefill(codes[:, :, :n_prefill], cache, text, adapters)]
    for p in range(n_prefill, T):
        out.append(decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache, adapters))
    return torch.stack(out, dim=2)  # (B, K, T - n_prefill + 1, V)


@torch.no_grad()
def test_zero_adapter_changes_nothing(decoder, text):
    codes = codes_for(9)
    zero = [lambda q, positions: torch.zeros_like(q)] * 2
    assert torch.equal(decoder(codes, text, adapters=zero), decoder(codes, text))
    assert torch.equal(run_cached(decoder, codes, text, zero), run_cached(decoder, codes, text, None))


@torch.no_grad()
def test_adapter_sees_queries_at_absolute_positions_and_changes_logits(decoder, text):
    codes = codes_for(9)
    hook = Recorder(0.5)
    adapted = run_cached(decoder, codes, text, [None, hook])  # only the last layer adapted
    plain = run_cached(decoder, codes, text, None)
    assert not torch.allclose(adapted, plain, atol=1e-3)
    H, Dh = decoder.config.num_attention_heads, decoder.config.head_dim
    assert hook.calls[0] == ((2, H, 4, Dh), [0, 1, 2, 3])  # prefill
    assert hook.calls[1:] == [((2, H, 1, Dh), [p]) for p in range(4, 9)]  # one step each
    # the reference path applies the same hook to the same effect
    full = decoder(codes, text, adapters=[None, Recorder(0.5)])
    assert torch.allclose(full[:, :, 3:], adapted, atol=1e-4)


def test_adapter_count_must_match_layers(decoder):
    with pytest.raises(ValueError, match="3 adapters for 2 decoder layers"):
        decoder(codes_for(3), adapters=[None, None, None])


def test_generate_passes_adapters_with_the_cfg_batch(tiny_musicgen_dir):
    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    text = musicgen.encode_text(["warm pads"])
    hook = Recorder(0.0)
    plain = musicgen.generate(text, 6, greedy=True)
    assert torch.equal(musicgen.generate(text, 6, greedy=True, adapters=[hook, None]), plain)
    assert hook.calls[0][0][0] == 2  # [conditional; null] rows
    steered = musicgen.generate(text, 6, greedy=True, adapters=[Recorder(2.0), Recorder(2.0)])
    assert not torch.equal(steered, plain)


@torch.no_grad()
def test_cache_is_preallocated_and_written_in_place(decoder, text):
    codes = codes_for(12)
    cache = decoder.allocate_cache(2, 12)
    pointers = (cache.self_k.data_ptr(), cache.self_v.data_ptr())
    shape = cache.self_k.shape
    decoder.prefill(codes[:, :, :3], cache, text)
    positions = torch.arange(12)
    for p in range(3, 12):
        decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache)
    assert (cache.self_k.data_ptr(), cache.self_v.data_ptr()) == pointers and cache.self_k.shape == shape
    assert cache.self_k[:, :, :, 11].abs().sum() > 0  # the last step wrote its keys


def traceable(decoder):
    """A copy of `decoder` on the "modules" backend, the one a traced step runs (numba is opaque to dynamo)."""
    import copy

    traced = copy.deepcopy(decoder)
    traced.choose_backend("modules")
    return traced


@torch.no_grad()
def test_decode_step_traces_as_one_graph(decoder, text):
    """No .item(), no branching on tensor values: dynamo captures the step without a break."""
    codes = codes_for(8)
    modules = traceable(decoder)
    cache = modules.allocate_cache(2, 8)
    modules.prefill(codes[:, :, :5], cache, text)
    step = torch.compile(modules.decode_step, backend="eager", fullgraph=True, dynamic=False)
    positions = torch.arange(8)
    traced = step(codes[:, :, 5:6], positions[5:6], cache)
    cache_copy = decoder.allocate_cache(2, 8)
    decoder.prefill(codes[:, :, :5], cache_copy, text)
    # traced, attention runs SDPA; on the CPU's own backend, our kernel: the same to float32 rounding
    torch.testing.assert_close(traced, decoder.decode_step(codes[:, :, 5:6], positions[5:6], cache_copy),
                               rtol=1e-5, atol=1e-5)


def test_attend_length_rounds_the_filled_part_up_to_a_bucket_of_64(decoder):
    cache = decoder.allocate_cache(1, 150)
    assert [cache.attend_length(p) for p in (0, 63, 64, 127, 128, 149)] == [64, 64, 128, 128, 150, 150]


@torch.no_grad()
def test_bucketed_attention_gives_the_logits_of_whole_cache_attention(decoder, text):
    """Past three buckets of a longer cache: the slice leaves out only masked positions."""
    T, n_prefill = 200, 20
    codes = codes_for(T)
    positions = torch.arange(T)
    steps = {}
    for mode in ("whole", "bucketed"):
        cache = decoder.allocate_cache(2, T + 40)  # longer than the piece, as a reused cache is
        decoder.prefill(codes[:, :, :n_prefill], cache, text)
        steps[mode] = torch.stack([
            decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache,
                                attend_length=None if mode == "whole" else cache.attend_length(p))
            for p in range(n_prefill, T)], dim=2)  # (B, K, T - n_prefill, V)
    # The kernel sums over fewer (exactly zero) terms, so only rounding may differ.
    torch.testing.assert_close(steps["bucketed"], steps["whole"], rtol=0, atol=1e-5)
    reference = decoder(codes, text)[:, :, n_prefill:]
    torch.testing.assert_close(steps["bucketed"], reference, rtol=0, atol=1e-5)

    # a compiled step takes the bucket as a static int, still without a graph break
    modules = traceable(decoder)
    cache = modules.allocate_cache(2, T)
    modules.prefill(codes[:, :, :150], cache, text)
    step = torch.compile(modules.decode_step, backend="eager", fullgraph=True, dynamic=False)
    traced = step(codes[:, :, 150:151], positions[150:151], cache, attend_length=cache.attend_length(150))
    torch.testing.assert_close(traced, steps["whole"][:, :, 150 - n_prefill], rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["head-major", "position-major"])
def test_decode_attention_kernel_matches_the_reference_over_a_cache_prefix(layout):
    """One query over the first n positions of a longer cache, stored (S, B, H, Dh) as a
    KVCache on the CPU is, or (B, H, S, Dh) (copied for the kernel); per-row and shared
    masks, one row fully masked (the null text of CFG): uniform, as the reference gives."""
    from expotion_live.model.attention import decode_attention, eager_attention
    from expotion_live.model.decoder import additive_mask

    g = torch.Generator().manual_seed(0)
    B, H, S, Dh, n = 2, 3, 40, 8, 27
    q = torch.randn(B, H, 1, Dh, generator=g)
    if layout == "head-major":
        k, v = torch.randn(B, H, S, Dh, generator=g), torch.randn(B, H, S, Dh, generator=g)
    else:
        k, v = (torch.randn(S, B, H, Dh, generator=g).permute(1, 2, 0, 3) for _ in range(2))
        assert not k.is_contiguous()
    shared = additive_mask(torch.arange(n) < 20, torch.float32)[None]                 # (1, n): a causal row
    per_row = additive_mask(torch.stack([torch.arange(n) < 5, torch.zeros(n, dtype=torch.bool)]),
                            torch.float32)[:, None, None]                               # (B, 1, 1, n)
    for bias in (shared, per_row):
        got = decode_attention(q, k, v, bias)
        torch.testing.assert_close(got, eager_attention(q, k[:, :, :n], v[:, :, :n], bias), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], v[1, :, :n].mean(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_the_cache_is_position_major_where_our_kernels_read_it(decoder, text):
    """fp32 on the CPU: positions 0..p of every row and head of a layer are one contiguous run,
    what a step reads; the text's keys and values too. A model cast to bf16 (read by SDPA)
    keeps the head-major layout."""
    import copy

    cache = decoder.allocate_cache(2, 16)
    L, B, H, S, Dh = cache.self_k.shape
    for buffer in (cache.self_k, cache.self_v):
        assert buffer.permute(0, 3, 1, 2, 4).is_contiguous()   # (L, S, B, H, Dh) in memory
        assert buffer.stride(3) == B * H * Dh and buffer.abs().sum() == 0
    with torch.no_grad():
        decoder.prefill(codes_for(3), cache, text)
    expected = torch.stack([k for k, _, _ in decoder.cross_keys_values(text)])
    assert cache.cross_k.permute(0, 3, 1, 2, 4).is_contiguous() and torch.equal(cache.cross_k, expected)
    bf16 = copy.deepcopy(decoder).to(torch.bfloat16).allocate_cache(2, 16)
    assert bf16.self_k.is_contiguous() and bf16.self_k.shape == (L, B, H, S, Dh)

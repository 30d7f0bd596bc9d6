"""Weight precision: each precision's logits stay near fp32, and int8 and int4 really store int8 and int4.

Oracle: the same random decoder left in fp32. Both the reference forward (24 rows per
projection, over int8's many-row limit: the bf16 matmul) and prefill + decode_step (two
rows, the CFG decoding shape: our int8 kernel) are checked, at an even and an odd width.
Each kernel is checked against the exact product of the int8 / int4 weights it holds,
in the blocked layout wide projections use.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from expotion_live.model.config import DecoderConfig
from expotion_live.model.decoder import MusicGenDecoder
from expotion_live.model.precision import (LOGIT_TOLERANCE, PRECISIONS, Bf16Linear, Int4Linear, Int8Linear,
                                           apply_precision, default_precision, projection_bytes)
from expotion_live.model.text import TextCondition


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def random_decoder(hidden=64, heads=4, layers=2, seed=0) -> MusicGenDecoder:
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=64, num_codebooks=4, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, ffn_dim=2 * hidden, max_position_embeddings=64)
    return MusicGenDecoder(config).eval()


def logits_both_paths(decoder: MusicGenDecoder, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """(full forward logits (B,K,T,V), last decode_step logits (B,K,V)) on fixed random codes and text."""
    g = torch.Generator().manual_seed(seed)
    B, K, T, D = 2, decoder.config.num_codebooks, 12, decoder.config.hidden_size
    codes = torch.randint(0, decoder.config.vocab_size, (B, K, T), generator=g)
    text = TextCondition(torch.randn(B, 5, D, generator=g), torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    with torch.no_grad():
        full = decoder(codes, text)
        cache = decoder.allocate_cache(B, T)
        decoder.prefill(codes[:, :, :-1], cache, text)
        step = decoder.decode_step(codes[:, :, -1:], torch.tensor([T - 1]), cache)
    return full, step


@pytest.mark.parametrize("hidden, heads", [(64, 4), (40, 5)])
@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
def test_logits_stay_close_to_fp32(precision, hidden, heads):
    decoder = random_decoder(hidden, heads)
    ref_full, ref_step = logits_both_paths(decoder)
    apply_precision(decoder, precision, "cpu")
    full, step = logits_both_paths(decoder)
    for got, ref in ((full, ref_full), (step, ref_step)):
        err = relative_error(got, ref)
        assert 0 < err < LOGIT_TOLERANCE[precision], f"{precision}: relative logit error {err:.2e}"
    assert full.dtype == torch.float32 and step.shape == ref_step.shape


def test_fp32_leaves_the_decoder_untouched():
    decoder = random_decoder()
    ref_full, _ = logits_both_paths(decoder)
    assert apply_precision(decoder, "fp32", "cpu") is decoder
    assert all(type(m) is not Int8Linear and type(m) is not Bf16Linear for m in decoder.modules())
    full, _ = logits_both_paths(decoder)
    assert torch.equal(full, ref_full)


def test_int8_and_bf16_really_store_fewer_bytes():
    decoder = random_decoder()
    fp32_bytes = projection_bytes(decoder)
    n_weights = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, nn.Linear))
    assert fp32_bytes == 4 * n_weights

    bf16 = apply_precision(copy.deepcopy(decoder), "bf16", "cpu")
    assert projection_bytes(bf16) == 2 * n_weights

    int8 = apply_precision(decoder, "int8", "cpu")
    projections = [m for m in int8.modules() if isinstance(m, Int8Linear)]
    # per layer: q,k,v,o of self- and cross-attention, fc1, fc2; then one head per codebook
    assert len(projections) == 2 * (4 + 4 + 2) + 4
    assert all(m.weight.dtype == torch.int8 and m.int8_weight().shape == (m.out_features, m.in_features)
               for m in projections)
    n_scales = sum(m.out_features for m in projections)
    assert projection_bytes(int8) == n_weights + 4 * n_scales  # 1 byte per weight, one fp32 scale per row
    assert not any(type(m) is nn.Linear for m in int8.modules())


def test_int4_stores_half_a_byte_per_weight_and_a_scale_per_group():
    decoder = random_decoder(hidden=128)
    n_weights = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, nn.Linear))
    int4 = apply_precision(decoder, "int4", "cpu")
    projections = [m for m in int4.modules() if isinstance(m, Int4Linear)]
    assert len(projections) == 2 * (4 + 4 + 2) + 4 and not any(type(m) is nn.Linear for m in int4.modules())
    assert all(m.weight.dtype == torch.uint8 and m.group == 64 for m in projections)
    assert projection_bytes(int4) == n_weights // 2 + 4 * (n_weights // 64)   # half a byte, 4 bytes per 64
    q = torch.cat([m.int4_weight().flatten() for m in projections])
    assert q.abs().max() == 7 and len(q.unique()) == 15                        # symmetric, all 15 levels used


@pytest.mark.parametrize("in_features, block", [(64, 64), (40, 40), (2048, 1024), (1500, 750)])
@pytest.mark.parametrize("lead", [(1, 1), (2, 1), (3, 1), (4, 2), (5, 8)])  # up to 8 rows: our kernel; 40: bf16 matmul
@pytest.mark.parametrize("out_features", [48, 37])   # the kernel pairs rows n and n + N/2; odd N leaves one alone
def test_int8_projection_computes_the_product_of_its_int8_weights(in_features, block, lead, out_features):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=True)
    q = Int8Linear(linear)
    assert q.weight.shape == (in_features // block, out_features, block)   # column blocks, each contiguous
    x = torch.randn(*lead, in_features)                             # leading dims are flattened into rows
    exact = (x.double() @ q.int8_weight().double().T * q.weight_scale.double() + linear.bias.double()).float()
    with torch.no_grad():
        y = q(x)
    assert q.uses_int8_kernel(x.reshape(-1, in_features)) == (x.numel() // in_features <= 8)
    assert y.shape == (*lead, out_features)
    # our kernel sums in fp32 (error ~1e-7); the many-row path multiplies in bf16
    assert relative_error(y, exact) < (1e-5 if q.uses_int8_kernel(x.reshape(-1, in_features)) else 1e-2)
    # Symmetric per-row quantization: each weight the projection applies (its response to each unit input,
    # less the bias) is within half a step of the original.
    with torch.no_grad():
        applied = (q(torch.eye(in_features)) - q.bias).T                                  # (N, K)
    assert (applied - linear.weight).abs().le(q.weight_scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("in_features, block, group", [(64, 64, 64), (40, 40, 40), (2048, 1024, 64),
                                                       (1500, 750, 50)])
@pytest.mark.parametrize("lead", [(1, 1), (2, 1), (3, 1), (4, 2), (5, 8)])  # up to 8 rows: our kernel; 40: bf16 matmul
@pytest.mark.parametrize("out_features", [48, 37])   # rows n and n + N/2 are paired, as in the int8 kernel
def test_int4_projection_computes_the_product_of_its_int4_weights(in_features, block, group, lead, out_features):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=True)
    q = Int4Linear(linear)
    assert q.weight.shape == (in_features // block, out_features, block // 2)   # two weights a byte, blocked
    assert q.weight_scale.shape == (in_features // block, out_features, block // group) and q.group == group
    x = torch.randn(*lead, in_features)
    weights = q.int4_weight().double() * q.column_scales().double()             # (N, K): q_nk * scale of its group
    exact = (x.double() @ weights.T + linear.bias.double()).float()
    with torch.no_grad():
        y = q(x)
    kernel = q.uses_int4_kernel(x.reshape(-1, in_features))
    assert kernel == (x.numel() // in_features <= 8)
    assert y.shape == (*lead, out_features)
    assert relative_error(y, exact) < (1e-5 if kernel else 1e-2)
    # Symmetric per-group quantization: each weight within half a step of its group's scale.
    assert (q.dequantized_weight(torch.float32) - linear.weight).abs().le(q.column_scales() / 2 + 1e-7).all()


@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
def test_gradients_reach_the_input_through_frozen_projections(precision):
    """The adaptor trains through the frozen decoder layers, whatever their precision."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16))
    x = torch.randn(4, 32, requires_grad=True)
    net(x).square().sum().backward()
    ref_grad, x.grad = x.grad.clone(), None

    apply_precision(net, precision, "cpu")
    net(x).square().sum().backward()
    assert relative_error(x.grad, ref_grad) < 3 * LOGIT_TOLERANCE[precision]


def test_bad_precision_is_a_clear_error():
    decoder = random_decoder()
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16, int8, int4"):
        apply_precision(decoder, "fp16", "cpu")
    apply_precision(decoder, "int8", "cpu")
    apply_precision(decoder, "int8", "cpu")  # idempotent
    with pytest.raises(ValueError, match="load the model again"):
        apply_precision(decoder, "fp32", "cpu")
    with pytest.raises(ValueError, match="already Int8Linear; load the model again"):
        apply_precision(decoder, "int4", "cpu")


def test_auto_resolves_to_the_device_default():
    assert default_precision("cpu") in PRECISIONS
    decoder = apply_precision(random_decoder(), "auto", "cpu")
    expected = {"bf16": Bf16Linear, "int8": Int8Linear}.get(default_precision("cpu"), nn.Linear)
    assert type(decoder.layers[0].fc1) is expected

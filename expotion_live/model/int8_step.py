"""The decoding step of an int8 or int4 decoder on the CPU: two numba calls per layer instead of ~30 torch ops.

With int8 or int4 projections the weights are few bytes, and our kernel streams them fast;
what is left of a step run as torch modules is ~30 small torch ops per layer (layer
norms, head views, cache writes, residual adds, GELU) on (2, D) tensors, and attention
over the bucketed length. Here each layer is `cpu_kernels.self_attention_step` then
`cpu_kernels.rest_of_layer_step` on numpy views of the same weights and cache, so the
step is projections, attention and little else. `bench/decode.py` measures the whole step.

It is the "int8-numba" backend of `backends` (every projection `Int8Linear` without
bias, fp32 on the CPU) and the "int4-numba" one (every projection `Int4Linear`): the
same two kernels, compiled once for each weight layout (`cpu_kernels.project`). The
math is the decoder's, checked against its "modules" backend in tests/test_int8_step.py.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import cpu_kernels

# Without text: keys and values with no positions, and a bias with no columns (the kernel skips cross-attention)
_NO_TEXT = (np.zeros((0, 1, 1, 1), np.float32), np.zeros((0, 1, 1, 1), np.float32), np.zeros((1, 0), np.float32))


class LayerWeights(NamedTuple):
    """One decoder layer's frozen weights as numpy views: projections (blocks, scales), norms (w, b, eps)."""

    self_norm: tuple
    q: tuple
    k: tuple
    v: tuple
    o: tuple
    cross_norm: tuple
    cross_q: tuple
    cross_o: tuple
    ffn_norm: tuple
    fc1: tuple
    fc2: tuple


def projection_arrays(linear: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """An `Int8Linear`'s (int8 weight blocks (K/B, N, B), scales (N,)) or an `Int4Linear`'s (packed blocks
    (K/B, N, B/2), group scales (K/B, N, B/G)) as numpy views, as the kernels take them."""
    return linear.weight.detach().numpy(), linear.weight_scale.detach().numpy()


def _norm(norm: nn.LayerNorm) -> tuple[np.ndarray, np.ndarray, float]:
    return norm.weight.detach().numpy(), norm.bias.detach().numpy(), float(norm.eps)


class QuantizedDecodeStep:
    """`decode_step`'s layers for an int8 or int4 decoder on the CPU; built once per decoder placement."""

    position_major = True    # the kernels read positions 0..p of a layer's cache as one run
    cuda_graphs = False

    def __init__(self, name: str, layers: Sequence[nn.Module]):
        self.name = name
        self.layers = [LayerWeights(
            self_norm=_norm(layer.self_attn_layer_norm), q=projection_arrays(layer.self_attn.q_proj),
            k=projection_arrays(layer.self_attn.k_proj), v=projection_arrays(layer.self_attn.v_proj),
            o=projection_arrays(layer.self_attn.out_proj), cross_norm=_norm(layer.encoder_attn_layer_norm),
            cross_q=projection_arrays(layer.encoder_attn.q_proj),
            cross_o=projection_arrays(layer.encoder_attn.out_proj), ffn_norm=_norm(layer.final_layer_norm), fc1=projection_arrays(layer.fc1), fc2=projection_arrays(layer.fc2))
            for layer in layers]

    def __call__(self, x: torch.Tensor, position: torch.Tensor, cache, adapters,
                 attend_length: int) -> torch.Tensor:
        """x (M, 1, D) embedded at `position` (LongTensor (1,)) -> (M, 1, D) after every layer.

        Attends over cache positions 0..position exactly, whatever `attend_length`: no
        graph is traced here, so a bucketed length buys nothing and would read masked
        positions of keys and values. `adapters` as in `decoder` (one per layer, None or
        a(q, positions) added to the attention output).
        """
        if not cache.position_major:
            raise ValueError("this KV cache was allocated for another decode backend (the decoder was moved or "
                             "cast since): allocate a new one")
        M, _, D = x.shape
        p = int(position[0])
        attend = p + 1
        stream = x.detach().reshape(M, D).numpy().copy()   # the residual stream, updated in place
        q = np.empty((M, D), np.float32)
        s = np.empty((M, D), np.float32)
        self_k = cache.self_k.permute(0, 3, 1, 2, 4).numpy()   # (L, S, M, H, Dh): the cache's memory order
        self_v = cache.self_v.permute(0, 3, 1, 2, 4).numpy()
        bias = cache.causal_bias.numpy()[p:p + 1, :attend]   # (1, attend): 0 up to p, min after
        has_text = cache.cross_k is not None
        if has_text:
            cross_k = cache.cross_k.permute(0, 3, 1, 2, 4).numpy()   # (L, S_text, M, H, Dh), as stored
            cross_v = cache.cross_v.permute(0, 3, 1, 2, 4).numpy()
            cross_bias = cache.cross_bias.reshape(M, -1).numpy()   # (M, S_text)
        H = self_k.shape[3]
        q_heads = torch.from_numpy(q).view(M, H, 1, D // H)   # the adapters' view: (M, H, 1, Dh)
        s_heads = torch.from_numpy(s).view(M, H, 1, D // H)
        for i, (w, adapter) in enumerate(zip(self.layers, adapters)):
            cpu_kernels.self_attention_step(stream, w.self_norm, w.q, w.k, w.v, self_k[i], self_v[i], p, bias, q, s)
            if adapter is not None:
                s_heads += adapter(q_heads, position)   # §3.3: S_l + g_l * S'_l
            text = (cross_k[i], cross_v[i], cross_bias) if has_text else _NO_TEXT
            cpu_kernels.rest_of_layer_step(stream, s, w.o, w.cross_norm, w.cross_q, w.cross_o, *text,
                                           w.ffn_norm, w.fc1, w.fc2)
        return torch.from_numpy(stream).view(M, 1, D)

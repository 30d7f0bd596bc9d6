"""The decoding step's layers on a GPU: the same math in fewer, larger kernels.

Replayed as a CUDA graph (`stream.GraphSteps`), a step pays a fixed cost per kernel on
top of the bytes it reads, and a musicgen-large step is ~1000 kernels. Per layer this
body (the "fused-gpu" backend of `backends`) launches fewer of them than the modules'
own forward: the q, k and v projections are one matmul over their weights laid side by
side (the modules' weights become views into that one tensor, so nothing is stored
twice), and the three residual adds ride in the output projections (`addmm`). The math
is `DecoderLayer.forward`'s, checked against it in tests/test_gpu_step.py.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import fused_attention


def _fuse_qkv(attn: nn.Module) -> torch.Tensor:
    """One (3D, D) weight [W_q; W_k; W_v]; the three projections' weights become views of it."""
    D = attn.q_proj.in_features
    weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
    for i, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
        proj.weight = nn.Parameter(weight[i * D:(i + 1) * D], requires_grad=False)
    return weight


class FusedDecodeStep:
    """`decode_step`'s layers with fused projections; built once per decoder placement."""

    name = "fused-gpu"
    position_major = False   # SDPA's usual head-major layout

    def __init__(self, layers: Sequence[nn.Module], cuda_graphs: bool):
        self.layers = layers
        self.qkv = [_fuse_qkv(layer.self_attn) for layer in layers]
        self.cuda_graphs = cuda_graphs   # on CUDA; elsewhere it runs only when named (its math is tested on the CPU)

    def __call__(self, x: torch.Tensor, position: torch.Tensor, cache, adapters: Sequence,
                 attend_length: int) -> torch.Tensor:
        """x (M, 1, D) at `position` -> (M, 1, D) after every layer, attending over `attend_length` positions."""
        M, _, D = x.shape
        self_bias = cache.step_bias(position, attend_length)   # (1, attend_length)
        x = x.reshape(M, D)
        has_text = cache.cross_k is not None
        for i, (layer, qkv, adapter) in enumerate(zip(self.layers, self.qkv, adapters)):
            H = layer.self_attn.n_heads
            h = layer.self_attn_layer_norm(x)
            q, k, v = F.linear(h, qkv).view(M, 3, H, 1, D // H).unbind(1)     # (M, H, 1, Dh) each
            cache.self_k[i].index_copy_(2, position, k)
            cache.self_v[i].index_copy_(2, position, v)
            s = fused_attention(q, cache.self_k[i], cache.self_v[i], self_bias)  # (M, H, 1, Dh)
            if adapter is not None:
                s = s + adapter(q, position)                                     # §3.3: S_l + g_l * S'_l
            x = torch.addmm(x, s.reshape(M, D), layer.self_attn.out_proj.weight.t())
            if has_text:
                h = layer.encoder_attn_layer_norm(x)
                q = F.linear(h, layer.encoder_attn.q_proj.weight).view(M, H, 1, D // H)
                c = fused_attention(q, cache.cross_k[i], cache.cross_v[i], cache.cross_bias)
                x = torch.addmm(x, c.reshape(M, D), layer.encoder_attn.out_proj.weight.t())
            h = F.gelu(F.linear(layer.final_layer_norm(x), layer.fc1.weight))
            x = torch.addmm(x, h, layer.fc2.weight.t())
        return x.view(M, 1, D)

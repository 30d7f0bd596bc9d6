"""The attention functions the decoder and its decode backends take as `attend(q, k, v, bias)`.

Each computes softmax(q k^T / sqrt(Dh) + bias) v over the first bias.shape[-1] positions
of k and v, which may be whole cache buffers (B, H, S, Dh):

- `eager_attention`: spelled out, the slow, obvious reference;
- `fused_attention`: torch's SDPA, what prefill, training and the torch backends run;
- `decode_attention`: our numba kernel for one query position (`backends`' "cpu-modules").
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import cpu_kernels

# attend(q, k, v, bias) -> s: attention over the first bias.shape[-1] positions of k and v
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def eager_attention(q, k, v, bias):
    """softmax(q k^T / sqrt(Dh) + bias) v, spelled out: the reference for the fused kernel."""
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias  # (B, H, Tq, Tk)
    return scores.softmax(dim=-1) @ v


def fused_attention(q, k, v, bias):
    n = bias.shape[-1]   # k and v may be whole cache buffers: attend over the first n positions
    return F.scaled_dot_product_attention(q, k[:, :, :n], v[:, :, :n], attn_mask=bias)


def decode_attention(q, k, v, bias):
    """One query position, fp32 on the CPU, by `cpu_kernels.attend_one` (SDPA's CPU kernel is built for many queries).

    The kernel reads position-major keys and values, the layout of a `KVCache` whose
    backend runs this (then no copy is made); any other layout is copied into it. Numba
    is opaque to autograd and tracing: a traced step runs the "modules" backend instead.
    """
    B, H, _, Dh = q.shape
    out = np.empty((B, H, Dh), np.float32)
    q_rows = q.detach().reshape(B, H, Dh).contiguous().numpy()
    bias_rows = bias.detach().reshape(-1, bias.shape[-1]).contiguous().numpy()
    k_rows, v_rows = (t.detach().permute(2, 0, 1, 3).contiguous().numpy() for t in (k, v))   # (S, B, H, Dh)
    cpu_kernels.attend_one(q_rows, k_rows, v_rows, bias_rows, out)
    return torch.from_numpy(out).view(B, H, 1, Dh)

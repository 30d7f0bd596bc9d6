"""Our numba kernels for the decoding step on the CPU, where torch's are built for bigger shapes.

A decoding step multiplies two rows (the CFG batch) by every projection and attends
with one query per head; torch's CPU kernels are tuned for many rows and queries. These
two are plain loops that LLVM vectorizes (fastmath), compiled once at import (cached on
disk) and run with the GIL released:

- `int8_rows`: int8 projections (used by `precision.Int8Linear`);
- `attend_one`: attention of one query over a prefix of the KV cache (`decoder.decode_attention`).

`takes(t)` is the one rule for when they run: fp32 on the CPU, outside autograd (they
have no derivative) and outside tracing (numba is opaque to torch.compile and CUDA
graphs, so a traced step keeps torch's kernels and stays one graph).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit


def takes(t: torch.Tensor) -> bool:
    """These kernels may compute on `t`: fp32, CPU, no gradient wanted, not being traced."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and t.requires_grad))


@njit("void(float32[:, :, ::1], int8[:, :, ::1], float32[::1], float32[:, ::1])",
      cache=True, nogil=True, fastmath=True, boundscheck=False)
def int8_rows(x, w, scale, out):
    """out = (x W^T) * scale for a few rows, W int8 in column blocks; releases the GIL.

    x (M, nb, B) f32 and w (nb, N, B) int8 are the (M, K) activations and the (N, K)
    weight cut into nb blocks of B columns; scale (N,), out (M, N). Decoding is bound by
    reading W, so each weight is loaded once per pair of rows, widened to fp32 in
    registers and shared by two running dot products, while the block of x they read
    (2 x B floats) stays in the L1 cache. (fastmath lets LLVM vectorize the sums; every
    index counts up from 0, so no negative-index checks stand in its way.)
    """
    M = x.shape[0]
    nb, N, B = w.shape
    for m in range(M):
        for n in range(N):
            out[m, n] = 0.0
    for b in range(nb):
        for n in range(N):
            m = 0
            while m + 1 < M:
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                for k in range(B):
                    wk = np.float32(w[b, n, k])
                    a0 += wk * x[m, b, k]
                    a1 += wk * x[m + 1, b, k]
                out[m, n] += a0
                out[m + 1, n] += a1
                m += 2
            if m < M:
                a0 = np.float32(0.0)
                for k in range(B):
                    a0 += np.float32(w[b, n, k]) * x[m, b, k]
                out[m, n] += a0
    for m in range(M):
        for n in range(N):
            out[m, n] *= scale[n]


@njit("void(float32[:, :, ::1], float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, ::1], float32[:, :, ::1])",
      cache=True, nogil=True, fastmath=True, boundscheck=False)
def attend_one(q, k, v, bias, out):
    """softmax(q k^T / sqrt(Dh) + bias) v for one query per head, over the first n keys.

    q (B, H, Dh); k, v (B, H, S, Dh) whole cache buffers; bias (1 or B, n) additive;
    out (B, H, Dh). Max-subtracted softmax; a fully masked row comes out uniform, as with
    `decoder.additive_mask`. Releases the GIL.
    """
    B, H, Dh = q.shape
    n = bias.shape[1]
    scale = np.float32(1.0 / math.sqrt(Dh))
    scores = np.empty(n, np.float32)
    acc = np.empty(Dh, np.float32)
    for b in range(B):
        row = b if bias.shape[0] > 1 else 0
        for h in range(H):
            top = np.float32(-np.inf)
            for j in range(n):
                s = np.float32(0.0)
                for d in range(Dh):
                    s += q[b, h, d] * k[b, h, j, d]
                s = s * scale + bias[row, j]
                scores[j] = s
                top = max(top, s)
            total = np.float32(0.0)
            for j in range(n):
                e = np.exp(scores[j] - top)
                scores[j] = e
                total += e
            acc[:] = 0.0
            for j in range(n):
                p = scores[j]
                for d in range(Dh):
                    acc[d] += p * v[b, h, j, d]
            for d in range(Dh):
                out[b, h, d] = acc[d] / total

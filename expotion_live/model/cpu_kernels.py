"""Our numba kernels for the decoding step on the CPU, where torch's are built for bigger shapes.

A decoding step multiplies two rows (the CFG batch) by every projection and attends
with one query per head; torch's CPU kernels are tuned for many rows and queries. These
are plain loops that LLVM vectorizes (fastmath), cached on disk and run with the GIL
released:

- `int8_rows`: int8 projections (used by `precision.Int8Linear`);
- `attend_one`: attention of one query over a prefix of position-major keys and values
  (`attention.decode_attention`, the "cpu-modules" backend's);
- `self_attention_step`, `rest_of_layer_step`: a whole decoder layer for one position of
  an int8 decoder in two calls (`int8_step.Int8DecodeStep`, the "int8-numba" backend),
  split where the adaptor adds its term. A projection is passed as the pair (int8
  weight blocks, scales) of `precision.Int8Linear`, a layer norm as (weight, bias, eps).

Which decoding step runs them is the decode backend's choice (`backends`), made once per
decoder placement. `takes(t)` is the rule for a module that calls them per call on
whatever it is given (`Int8Linear.forward`): fp32 on the CPU, outside autograd (they
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
    reading W, so each weight is loaded once per pair of rows and widened to fp32 in
    registers, while the block of x (2 x B floats) stays in the L1 cache. Two weight rows
    are read together, n and n + N/2, so each load of x feeds four dot products: one row
    at a time the loop is bound by its loads of x, not by the weights; two adjacent rows
    at once (two memory streams 1 KB apart) read memory far more slowly than two rows
    half a matrix apart. (fastmath lets LLVM vectorize the sums; every index counts up
    from 0, so no negative-index checks stand in its way.)
    """
    M = x.shape[0]
    nb, N, B = w.shape
    half = N // 2
    for m in range(M):
        for n in range(N):
            out[m, n] = 0.0
    for b in range(nb):
        for n in range(half):
            far = n + half
            m = 0
            while m + 1 < M:
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                c0 = np.float32(0.0)
                c1 = np.float32(0.0)
                for k in range(B):
                    x0 = x[m, b, k]
                    x1 = x[m + 1, b, k]
                    wk = np.float32(w[b, n, k])
                    vk = np.float32(w[b, far, k])
                    a0 += wk * x0
                    a1 += wk * x1
                    c0 += vk * x0
                    c1 += vk * x1
                out[m, n] += a0
                out[m + 1, n] += a1
                out[m, far] += c0
                out[m + 1, far] += c1
                m += 2
            if m < M:
                a0 = np.float32(0.0)
                c0 = np.float32(0.0)
                for k in range(B):
                    a0 += np.float32(w[b, n, k]) * x[m, b, k]
                    c0 += np.float32(w[b, far, k]) * x[m, b, k]
                out[m, n] += a0
                out[m, far] += c0
        if N % 2:   # an odd row count leaves the last row unpaired
            for m in range(M):
                a0 = np.float32(0.0)
                for k in range(B):
                    a0 += np.float32(w[b, N - 1, k]) * x[m, b, k]
                out[m, N - 1] += a0
    for m in range(M):
        for n in range(N):
            out[m, n] *= scale[n]


@njit("void(float32[:, :, ::1], float32[:, :, :, ::1], float32[:, :, :, ::1], float32[:, ::1], float32[:, :, ::1])",
      cache=True, nogil=True, fastmath=True, boundscheck=False)
def attend_one(q, k, v, bias, out):
    """softmax(q k^T / sqrt(Dh) + bias) v for one query per row and head, over the first n keys.

    q (B, H, Dh); k, v (S, B, H, Dh) position-major (the KV cache's and the text's
    layout, `decoder.KVCache`), of which the first n = bias.shape[1] positions are read;
    bias (1 or B, n) additive; out (B, H, Dh). Max-subtracted softmax: a fully masked row
    comes out uniform, as with `decoder.additive_mask`. Releases the GIL.

    The first n positions of every row and head are one contiguous run, read front to
    back once for the scores and once for the weighted sum; over head-major (B, H, S, Dh)
    buffers the runs per head are short and a cache row apart, which the same loops read
    more slowly.
    """
    B, H, Dh = q.shape
    n = bias.shape[1]
    scale = np.float32(1.0 / math.sqrt(Dh))
    scores = np.empty((B, H, n), np.float32)
    for j in range(n):
        for b in range(B):
            row = b if bias.shape[0] > 1 else 0
            for h in range(H):
                s = np.float32(0.0)
                for d in range(Dh):
                    s += q[b, h, d] * k[j, b, h, d]
                scores[b, h, j] = s * scale + bias[row, j]
    total = np.empty((B, H), np.float32)
    for b in range(B):
        for h in range(H):
            top = np.float32(-np.inf)
            for j in range(n):
                top = max(top, scores[b, h, j])
            t = np.float32(0.0)
            for j in range(n):
                e = np.exp(scores[b, h, j] - top)
                scores[b, h, j] = e
                t += e
            total[b, h] = t
    out[:] = 0.0
    for j in range(n):
        for b in range(B):
            for h in range(H):
                p = scores[b, h, j]
                for d in range(Dh):
                    out[b, h, d] += p * v[j, b, h, d]
    for b in range(B):
        for h in range(H):
            inv = np.float32(1.0) / total[b, h]
            for d in range(Dh):
                out[b, h, d] *= inv


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _project(x, projection, out):
    """out = x W^T for x (M, K) C-contiguous and `projection` = (int8 blocks, scales)."""
    weight, scale = projection
    n_blocks, _, block = weight.shape
    int8_rows(x.reshape(x.shape[0], n_blocks, block), weight, scale, out)


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _layer_norm(x, norm, out):
    """LayerNorm over the last axis of x (M, D) into out; norm = (weight, bias, eps). Two passes, as torch."""
    weight, bias, eps = norm
    M, D = x.shape
    for m in range(M):
        mean = np.float32(0.0)
        for d in range(D):
            mean += x[m, d]
        mean /= D
        var = np.float32(0.0)
        for d in range(D):
            var += (x[m, d] - mean) ** 2
        inv = np.float32(1.0) / np.sqrt(var / D + np.float32(eps))
        for d in range(D):
            out[m, d] = (x[m, d] - mean) * inv * weight[d] + bias[d]


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def self_attention_step(x, norm, q_proj, k_proj, v_proj, cache_k, cache_v, position, bias, q, s):
    """The self-attention half of a decoder layer at one position, before out_proj.

    x (M, D) the residual stream; cache_k, cache_v (S, M, H, Dh) this layer's cache
    (position-major), whose row `position` gets this step's keys and values; bias (1, n)
    additive over the first n positions. Writes q (M, D), the per-head queries (unscaled), and s (M, D), the
    per-head attention output: heads side by side, as `Attention.merge_heads` expects.
    """
    M, D = x.shape
    H, Dh = cache_k.shape[2], cache_k.shape[3]
    h = np.empty_like(x)
    k = np.empty_like(x)
    v = np.empty_like(x)
    _layer_norm(x, norm, h)
    _project(h, q_proj, q)
    _project(h, k_proj, k)
    _project(h, v_proj, v)
    cache_k[position] = k.reshape(M, H, Dh)
    cache_v[position] = v.reshape(M, H, Dh)
    attend_one(q.reshape(M, H, Dh), cache_k, cache_v, bias, s.reshape(M, H, Dh))


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def rest_of_layer_step(x, s, o_proj, cross_norm, cross_q_proj, cross_o_proj, cross_k, cross_v, cross_bias,
                       ffn_norm, fc1, fc2):
    """The rest of a decoder layer at one position, in place on x (M, D).

    x += out_proj(s); x += cross-attention to the text (skipped when cross_bias has no
    columns: no text); x += fc2(GELU(fc1(LN(x)))), the exact (erf) GELU.
    cross_k, cross_v (S_text, M, H, Dh), position-major; cross_bias (M, S_text).
    """
    M, D = x.shape
    delta = np.empty_like(x)
    _project(s, o_proj, delta)
    x += delta
    if cross_bias.shape[1] > 0:
        H, Dh = cross_k.shape[2], cross_k.shape[3]
        h = np.empty_like(x)
        q = np.empty_like(x)
        attended = np.empty_like(x)
        _layer_norm(x, cross_norm, h)
        _project(h, cross_q_proj, q)
        attend_one(q.reshape(M, H, Dh), cross_k, cross_v, cross_bias, attended.reshape(M, H, Dh))
        _project(attended, cross_o_proj, delta)
        x += delta
    h = np.empty_like(x)
    _layer_norm(x, ffn_norm, h)
    hidden = np.empty((M, fc1[0].shape[1]), np.float32)
    _project(h, fc1, hidden)
    root_half = np.float32(math.sqrt(0.5))
    for m in range(M):
        for j in range(hidden.shape[1]):
            a = hidden[m, j]
            hidden[m, j] = np.float32(0.5) * a * (np.float32(1.0) + math.erf(a * root_half))
    _project(hidden, fc2, delta)
    x += delta

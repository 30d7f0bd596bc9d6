"""Our numba kernels for the decoding step on the CPU, where torch's are built for bigger shapes.

A decoding step multiplies two rows (the CFG batch) by every projection and attends
with one query per head; torch's CPU kernels are tuned for many rows and queries. These
are plain loops that LLVM vectorizes (fastmath), cached on disk and run with the GIL
released:

- `int8_rows`: int8 projections (used by `precision.Int8Linear`);
- `int4_rows`: int4 projections with a scale per group of columns (`precision.Int4Linear`);
- `attend_one`: attention of one query over a prefix of position-major keys and values
  (`attention.decode_attention`, the "cpu-modules" backend's);
- `self_attention_step`, `rest_of_layer_step`: a whole decoder layer for one position of
  a quantized decoder in two calls, split where the adaptor adds its term
  (`int8_step.QuantizedDecodeStep`, the "int8-numba" and "int4-numba" backends). A projection is passed as the pair (weight blocks,
  scales) of `precision.Int8Linear` or `precision.Int4Linear`; `project` picks the
  kernel from the weight's dtype when numba compiles the caller. A layer norm is
  passed as (weight, bias, eps).

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
from numba import njit, types
from numba.extending import overload


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


@njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _int4_row_dot(x, x_sums, m, w, scale, b, n):
    """Block b's share of out[m, n] in `int4_rows`: the rows its pairing leaves alone."""
    groups = scale.shape[2]
    half_group = w.shape[2] // groups
    low, shift = np.uint8(15), np.uint8(4)
    total = np.float32(0.0)
    for g in range(groups):
        byte0 = g * half_group
        col0 = 2 * byte0
        a = np.float32(0.0)
        for j in range(half_group):
            a += np.float32(w[b, n, byte0 + j] & low) * x[m, b, col0 + j]
        for j in range(half_group):
            a += np.float32(w[b, n, byte0 + j] >> shift) * x[m, b, col0 + half_group + j]
        total += (a - np.float32(8.0) * x_sums[m, b, g]) * scale[b, n, g]
    return total


@njit("void(float32[:, :, ::1], uint8[:, :, ::1], float32[:, :, ::1], float32[:, ::1])",
      cache=True, nogil=True, fastmath=True, boundscheck=False)
def int4_rows(x, w, scale, out):
    """out = x W^T for a few rows, W int4 in column blocks with one scale per group of columns.

    x (M, nb, B) f32 is the (M, K) activations cut into nb blocks of B columns; w (nb, N,
    B/2) uint8 holds two weights a byte, stored as q + 8 (q in -7..7); scale (nb, N, B/G)
    one fp32 scale per group of G columns. Within a group, byte j holds column j in its
    low nibble and column j + G/2 in its high one. As `int8_rows`: rows n and n + N/2 are
    read together, each weight widened once in registers for every row of x. Releases the GIL.

    The nibbles are summed as stored (0..15) and the offset taken off once per group,
    sum_k x_k (q_k + 8) - 8 sum_k x_k, and each half of a group is its own loop: the
    nibble masks stay uint8 (numba widens `byte & 15` with an int constant to int64, a
    quarter of the vector lanes) and every loop reads x front to back, as int8's does.
    """
    M = x.shape[0]
    nb, N, _ = w.shape
    groups = scale.shape[2]
    half_group = w.shape[2] // groups
    half = N // 2
    low, shift = np.uint8(15), np.uint8(4)
    x_sums = np.empty((M, nb, groups), np.float32)
    for m in range(M):
        for b in range(nb):
            for g in range(groups):
                t = np.float32(0.0)
                for k in range(2 * half_group):
                    t += x[m, b, 2 * g * half_group + k]
                x_sums[m, b, g] = t
    for m in range(M):
        for n in range(N):
            out[m, n] = 0.0
    for b in range(nb):
        for n in range(half):
            far = n + half
            m = 0
            while m + 1 < M:
                for g in range(groups):
                    byte0 = g * half_group
                    col0 = 2 * byte0
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    c0 = np.float32(0.0)
                    c1 = np.float32(0.0)
                    for j in range(half_group):
                        wk = np.float32(w[b, n, byte0 + j] & low)
                        vk = np.float32(w[b, far, byte0 + j] & low)
                        x0 = x[m, b, col0 + j]
                        x1 = x[m + 1, b, col0 + j]
                        a0 += wk * x0
                        a1 += wk * x1
                        c0 += vk * x0
                        c1 += vk * x1
                    for j in range(half_group):
                        wk = np.float32(w[b, n, byte0 + j] >> shift)
                        vk = np.float32(w[b, far, byte0 + j] >> shift)
                        x0 = x[m, b, col0 + half_group + j]
                        x1 = x[m + 1, b, col0 + half_group + j]
                        a0 += wk * x0
                        a1 += wk * x1
                        c0 += vk * x0
                        c1 += vk * x1
                    s0 = np.float32(8.0) * x_sums[m, b, g]
                    s1 = np.float32(8.0) * x_sums[m + 1, b, g]
                    out[m, n] += (a0 - s0) * scale[b, n, g]
                    out[m + 1, n] += (a1 - s1) * scale[b, n, g]
                    out[m, far] += (c0 - s0) * scale[b, far, g]
                    out[m + 1, far] += (c1 - s1) * scale[b, far, g]
                m += 2
            if m < M:
                out[m, n] += _int4_row_dot(x, x_sums, m, w, scale, b, n)
                out[m, far] += _int4_row_dot(x, x_sums, m, w, scale, b, far)
        if N % 2:   # an odd row count leaves the last row unpaired
            for m in range(M):
                out[m, N - 1] += _int4_row_dot(x, x_sums, m, w, scale, b, N - 1)


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


def project(x, projection, out):
    """out = x W^T for x (M, K) C-contiguous and `projection` = (weight blocks, scales), int8 or int4.

    Only numba-compiled callers can call it: its overload picks the kernel from the
    weight's dtype when the caller is compiled (int8 -> `int8_rows`, uint8 -> `int4_rows`).
    """
    raise TypeError("cpu_kernels.project runs inside numba-compiled kernels only")


@overload(project, jit_options={"fastmath": True, "boundscheck": False})
def _project_by_weight_dtype(x, projection, out):
    weight_type = projection[0]
    if weight_type.dtype == types.int8:
        def project_int8(x, projection, out):
            weight, scale = projection
            n_blocks, _, block = weight.shape
            int8_rows(x.reshape(x.shape[0], n_blocks, block), weight, scale, out)
        return project_int8
    if weight_type.dtype == types.uint8:
        def project_int4(x, projection, out):
            weight, scale = projection
            n_blocks = weight.shape[0]
            int4_rows(x.reshape(x.shape[0], n_blocks, 2 * weight.shape[2]), weight, scale, out)
        return project_int4
    return None


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
    project(h, q_proj, q)
    project(h, k_proj, k)
    project(h, v_proj, v)
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
    project(s, o_proj, delta)
    x += delta
    if cross_bias.shape[1] > 0:
        H, Dh = cross_k.shape[2], cross_k.shape[3]
        h = np.empty_like(x)
        q = np.empty_like(x)
        attended = np.empty_like(x)
        _layer_norm(x, cross_norm, h)
        project(h, cross_q_proj, q)
        attend_one(q.reshape(M, H, Dh), cross_k, cross_v, cross_bias, attended.reshape(M, H, Dh))
        project(attended, cross_o_proj, delta)
        x += delta
    h = np.empty_like(x)
    _layer_norm(x, ffn_norm, h)
    hidden = np.empty((M, fc1[0].shape[1]), np.float32)
    project(h, fc1, hidden)
    root_half = np.float32(math.sqrt(0.5))
    for m in range(M):
        for j in range(hidden.shape[1]):
            a = hidden[m, j]
            hidden[m, j] = np.float32(0.5) * a * (np.float32(1.0) + math.erf(a * root_half))
    project(hidden, fc2, delta)
    x += delta

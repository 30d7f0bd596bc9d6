"""Our MusicGen decoder: the transformer over the K EnCodec codebooks.

The math is transformers' `MusicgenForCausalLM` (pre-LayerNorm, sinusoidal positions,
summed codebook embeddings, T5 cross-attention, one LM head per codebook), written so
that we own the cache and the hot loop:

- `forward()`      whole sequence, no cache: with eager attention the slow, obvious reference
                   (with `fused_attention`, what training runs).
- `prefill()`      a prompt in one pass, writing a preallocated `KVCache` in place.
- `decode_step()`  one position: static shapes (attends over the first `attend` cache
                   positions, a Python int the loop rounds up to a bucket of
                   `ATTEND_BUCKET`, under a mask row picked by the position tensor),
                   no `.item()`, no branching on tensor values, nothing allocated that
                   grows per step. An int8 decoder on the CPU runs its layers as numba
                   kernels instead (`int8_step`: same math, a fraction of the overhead).

Every projection is a plain `nn.Linear`, so `precision.apply_precision` can swap them.

Adaptor hook (the paper's fused prefix attention, §3.3: H_{l+1} = CrossAttn(S_l + g_l S'_l,
text)): `adapters` holds one entry per layer, `None` or a callable `a(q, positions)`;
inside that layer's self-attention `s = s + a(q, positions)`, where `q` (B, H, T, Dh)
are the per-head queries (before scaling) at absolute sequence `positions` (T,), and
`s` (B, H, T, Dh) the per-head attention output before the heads are merged and
`out_proj` applied. With CFG the batch is [conditional; null], so adapters see twice
the prompt batch.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels, int8_step
from .config import DecoderConfig
from .text import TextCondition

# decode_step attends over the filled cache rounded up to a multiple of this many positions:
# attention time grows with the filled length instead of the whole preallocated cache
# (musicgen-small, one layer, CFG batch: 92 µs over 256 positions, 750 µs over 1024; a whole
# int8 step at position 100 of a 20 s cache, 1 thread: 58 ms over all of it, 37 ms bucketed),
# while shapes, and so a compiled step's graph, change only once per bucket.
ATTEND_BUCKET = 64

Adapter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# attend(q, k, v, bias) -> s: attention over the first bias.shape[-1] positions of k and v
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """(n_positions, dim) table [cos | sin], tensor2tensor-style as in MusicGen."""
    half = dim // 2
    cpu = torch.device("cpu")  # real numbers even while the module is built on the meta device
    inv_freq = torch.exp(torch.arange(half, dtype=torch.float32, device=cpu) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(n_positions, dtype=torch.float32, device=cpu)[:, None] * inv_freq[None, :]  # (N, half)
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table


def eager_attention(q, k, v, bias):
    """softmax(q k^T / sqrt(Dh) + bias) v, spelled out: the reference for the fused kernel."""
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias  # (B, H, Tq, Tk)
    return scores.softmax(dim=-1) @ v


def fused_attention(q, k, v, bias):
    n = bias.shape[-1]   # k and v may be whole cache buffers: attend over the first n positions
    return F.scaled_dot_product_attention(q, k[:, :, :n], v[:, :, :n], attn_mask=bias)


def decode_attention(q, k, v, bias):
    """One query position: our kernels on the CPU in fp32, SDPA elsewhere and when traced.

    SDPA's CPU kernel is built for many queries; for one it spent ~1.6x as long as
    `cpu_kernels.attend_one` over 64-256 cached positions (24 layers, CFG batch,
    musicgen-small). The kernel reads position-major keys and values, the layout of a
    `KVCache` here (then no copy is made); any other layout is copied into it. A traced
    step (torch.compile, a CUDA graph) keeps SDPA.
    """
    if not cpu_kernels.takes(q):
        return fused_attention(q, k, v, bias)
    B, H, _, Dh = q.shape
    out = np.empty((B, H, Dh), np.float32)
    q_rows = q.detach().reshape(B, H, Dh).contiguous().numpy()
    bias_rows = bias.detach().reshape(-1, bias.shape[-1]).contiguous().numpy()
    k_rows, v_rows = (t.detach().permute(2, 0, 1, 3).contiguous().numpy() for t in (k, v))   # (S, B, H, Dh)
    cpu_kernels.attend_one(q_rows, k_rows, v_rows, bias_rows, out)
    return torch.from_numpy(out).view(B, H, 1, Dh)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's most negative value elsewhere.

    A finite minimum (not -inf) keeps a fully masked row finite: softmax is then
    uniform, which is what transformers does for the null text of CFG.
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


@dataclass
class KVCache:
    """Keys and values for one generation, preallocated to its full length and written in place.

    Keys and values (the steps' and the text's) are (L, B, H, S, Dh) tensors, made by
    `MusicGenDecoder._cache_zeros`; where our CPU kernels read them (fp32 on the CPU)
    they are views of position-major storage (L, S, B, H, Dh), so that a step reads
    positions 0..p of every row and head of a layer as one contiguous run
    (`cpu_kernels.attend_one`: 24 layers of musicgen-small over 101 positions 1.48 ms,
    2.60 head-major). Where SDPA reads them (a model cast to bf16, GPUs) they are
    head-major, as SDPA's bf16 CPU kernel ran 3x slower on position-major views (26.6 vs
    8.6 ms a step); GPUs are untested here, so they keep SDPA's usual layout.
    """

    self_k: torch.Tensor              # (L, B, H, S, Dh)
    self_v: torch.Tensor
    causal_bias: torch.Tensor         # (S, S) row p: 0 for positions <= p, min elsewhere
    cross_k: torch.Tensor | None = None  # (L, B, H, S_text, Dh), filled by prefill
    cross_v: torch.Tensor | None = None
    cross_bias: torch.Tensor | None = None  # (B, 1, 1, S_text)

    @property
    def length(self) -> int:
        return self.causal_bias.shape[0]

    def attend_length(self, position: int) -> int:
        """How many cache positions a step at `position` attends over: 0..position, rounded up to a bucket."""
        return min(self.length, (position // ATTEND_BUCKET + 1) * ATTEND_BUCKET)


class Attention(nn.Module):
    """Multi-head attention with transformers' parameter names (no biases, as in MusicGen)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, Dh)

    def merge_heads(self, s: torch.Tensor) -> torch.Tensor:
        B, H, T, Dh = s.shape
        return self.out_proj(s.transpose(1, 2).reshape(B, T, H * Dh))  # (B, T, D)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))


class DecoderLayer(nn.Module):
    """Pre-LN block: self-attention (+ adapter), cross-attention to the text, GELU feed-forward."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        D = config.hidden_size
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.self_attn = Attention(D, config.num_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(D)
        self.encoder_attn = Attention(D, config.num_attention_heads)
        self.final_layer_norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, config.ffn_dim, bias=False)
        self.fc2 = nn.Linear(config.ffn_dim, D, bias=False)

    def forward(self, x, positions, self_bias, cross, attend: Attend, adapter: Adapter | None = None,
                self_kv: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, T, D) at `positions` (T,). `cross` = (k, v, bias) of the text or None.

        With `self_kv` = (K, V) cache buffers (B, H, S, Dh), this step's keys and values are
        written into them at `positions`, and attention runs over the first N cache
        positions, N = self_bias.shape[-1] (the caller slices the bias to say how many).
        """
        h = self.self_attn_layer_norm(x)
        q = self.self_attn.split_heads(self.self_attn.q_proj(h))  # (B, H, T, Dh)
        k, v = self.self_attn.keys_values(h)
        if self_kv is not None:
            self_kv[0].index_copy_(2, positions, k)
            self_kv[1].index_copy_(2, positions, v)
            k, v = self_kv   # whole buffers (B, H, S, Dh): `attend` reads the first self_bias.shape[-1]
        s = attend(q, k, v, self_bias)  # (B, H, T, Dh)
        if adapter is not None:
            s = s + adapter(q, positions)  # §3.3: S_l + g_l * S'_l, the adaptor's term
        x = x + self.self_attn.merge_heads(s)

        if cross is not None:
            h = self.encoder_attn_layer_norm(x)
            q = self.encoder_attn.split_heads(self.encoder_attn.q_proj(h))
            x = x + self.encoder_attn.merge_heads(attend(q, *cross))

        h = self.final_layer_norm(x)
        return x + self.fc2(F.gelu(self.fc1(h)))


class MusicGenDecoder(nn.Module):
    """Codes (B, K, T) -> logits (B, K, T, V) for the next position, per codebook."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        D, K = config.hidden_size, config.num_codebooks
        self.embed_tokens = nn.ModuleList(nn.Embedding(config.vocab_size + 1, D) for _ in range(K))  # +1: pad
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = nn.LayerNorm(D)
        self.lm_heads = nn.ModuleList(nn.Linear(D, config.vocab_size, bias=False) for _ in range(K))
        self.register_buffer("positions_table", sinusoidal_positions(config.max_position_embeddings, D),
                             persistent=False)
        self.embed_scale = math.sqrt(D) if config.scale_embedding else 1.0
        self._int8_step: int8_step.Int8DecodeStep | bool | None = None   # see _int8_layers
        self._fused_step = None  # gpu_step.FusedDecodeStep, once `fuse_for_gpu` made it

    def _apply(self, fn, recurse=True):
        self._int8_step = None   # moved or cast: the step's numpy views would point at the old storage
        self._fused_step = None  # and its fused weights would be the old placement's
        return super()._apply(fn, recurse)

    def fuse_for_gpu(self) -> bool:
        """Decode with `gpu_step`'s fused layers from now on (a GPU's captured step); False if they do not fit."""
        from . import gpu_step

        if gpu_step.fits(self):
            self._fused_step = gpu_step.FusedDecodeStep(self.layers)
        return self._fused_step is not None

    def _int8_layers(self, x: torch.Tensor) -> int8_step.Int8DecodeStep | None:
        """The numba path for this step's layers, when the decoder is int8 on the CPU and no gradient is wanted."""
        if not cpu_kernels.takes(x) or torch.is_grad_enabled():
            return None
        if self._int8_step is None:   # decided once per placement (fits() walks every module)
            self._int8_step = int8_step.fits(self) and int8_step.Int8DecodeStep(self.layers)
        return self._int8_step or None

    @property
    def dtype(self) -> torch.dtype:
        return self.layer_norm.weight.dtype

    def embed(self, codes: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Sum of the K codebook embeddings plus the sinusoidal position: (B, K, T) -> (B, T, D)."""
        B, K, T = codes.shape
        x = sum(self.embed_tokens[k](codes[:, k]) for k in range(K)) * self.embed_scale
        return x + self.positions_table.index_select(0, positions).to(x.dtype)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(x)
        return torch.stack([head(x) for head in self.lm_heads], dim=1)  # (B, K, T, V)

    def cross_keys_values(self, text: TextCondition | None):
        """Per layer (k, v, bias) of the text for cross-attention, or None per layer without text."""
        if text is None:
            return [None] * len(self.layers)
        hidden = text.hidden.to(self.dtype)
        bias = additive_mask(text.mask[:, None, None, :], hidden.dtype)  # (B, 1, 1, S_text)
        return [(*layer.encoder_attn.keys_values(hidden), bias) for layer in self.layers]

    def _adapters(self, adapters: Sequence[Adapter | None] | None) -> Sequence[Adapter | None]:
        if adapters is None:
            return [None] * len(self.layers)
        if len(adapters) != len(self.layers):
            raise ValueError(f"got {len(adapters)} adapters for {len(self.layers)} decoder layers")
        return adapters

    def forward(self, codes: torch.Tensor, text: TextCondition | None = None,
                adapters: Sequence[Adapter | None] | None = None, attend: Attend = eager_attention) -> torch.Tensor:
        """The whole sequence at once, no cache. (B,K,T) -> (B,K,T,V).

        With the default eager attention this is the slow, obvious reference; training
        passes `fused_attention` (same math, without the (B, H, T, T) scores kept for backward).
        """
        B, K, T = codes.shape
        positions = torch.arange(T, device=codes.device)
        x = self.embed(codes, positions)
        causal = additive_mask(torch.ones(T, T, dtype=torch.bool, device=codes.device).tril(), x.dtype)
        for layer, cross, adapter in zip(self.layers, self.cross_keys_values(text), self._adapters(adapters)):
            x = layer(x, positions, causal, cross, attend, adapter)
        return self.logits(x)

    def allocate_cache(self, batch_size: int, max_length: int, device=None) -> KVCache:
        """A cache for `max_length` positions: allocated once per generation, never grown."""
        if max_length > self.config.max_position_embeddings:
            raise ValueError(f"{max_length} positions exceed the model's {self.config.max_position_embeddings} "
                             f"(about {self.config.max_position_embeddings // 50} s): generate a shorter piece")
        c = self.config
        device = device or self.positions_table.device
        allowed = torch.ones(max_length, max_length, dtype=torch.bool, device=device).tril()
        shape = (c.num_hidden_layers, batch_size, c.num_attention_heads, max_length, c.head_dim)
        return KVCache(self_k=self._cache_zeros(shape, device), self_v=self._cache_zeros(shape, device),
                       causal_bias=additive_mask(allowed, self.dtype))

    def _cache_zeros(self, shape: tuple[int, ...], device) -> torch.Tensor:
        """Zeros of shape (L, B, H, S, Dh) in a `KVCache`'s memory order: position-major for fp32 on the CPU."""
        if torch.device(device).type == "cpu" and self.dtype == torch.float32:
            L, B, H, S, Dh = shape
            return torch.zeros(L, S, B, H, Dh, dtype=self.dtype, device=device).permute(0, 2, 3, 1, 4)
        return torch.zeros(shape, dtype=self.dtype, device=device)

    def prefill(self, codes: torch.Tensor, cache: KVCache, text: TextCondition | None = None,
                adapters: Sequence[Adapter | None] | None = None) -> torch.Tensor:
        """Run positions 0..T-1 in one pass, filling `cache`; return the last position's logits (B, K, V)."""
        self.write_text(cache, text)
        return self.prefill_codes(codes, cache, adapters)

    def prefill_codes(self, codes: torch.Tensor, cache: KVCache,
                      adapters: Sequence[Adapter | None] | None = None) -> torch.Tensor:
        """`prefill` over the text the cache already holds (a stream that slides keeps its prompt)."""
        B, K, T = codes.shape
        positions = torch.arange(T, device=codes.device)
        has_text = cache.cross_k is not None
        self_bias = cache.causal_bias[:T, :T]  # (T, T): the prompt attends over its own positions only
        x = self.embed(codes, positions)
        for i, (layer, adapter) in enumerate(zip(self.layers, self._adapters(adapters))):
            cross = (cache.cross_k[i], cache.cross_v[i], cache.cross_bias) if has_text else None
            x = layer(x, positions, self_bias, cross, fused_attention, adapter,
                      self_kv=(cache.self_k[i], cache.self_v[i]))
        return self.logits(x[:, -1:])[:, :, 0]

    def write_text(self, cache: KVCache, text: TextCondition | None, capacity: int = 0) -> None:
        """Put the text's cross-attention keys and values into `cache`, for every layer.

        With `capacity` (text positions, for a cache that outlives one prompt), the text
        goes into buffers of that many positions, written in place when they exist, so a
        captured decode step keeps reading the same memory after a prompt change; the
        positions past the text are masked. Without, the buffers fit this text exactly.
        """
        if text is None:
            cache.cross_k = cache.cross_v = cache.cross_bias = None
            return
        crosses = self.cross_keys_values(text)
        keys, values = torch.stack([k for k, _, _ in crosses]), torch.stack([v for _, v, _ in crosses])
        L, B, H, S, Dh = keys.shape
        size = max(capacity, S)
        if cache.cross_k is None or cache.cross_k.shape != (L, B, H, size, Dh):
            cache.cross_k = self._cache_zeros((L, B, H, size, Dh), keys.device)   # (L, B, H, S_text, Dh)
            cache.cross_v = self._cache_zeros((L, B, H, size, Dh), keys.device)
            cache.cross_bias = torch.empty(B, 1, 1, size, dtype=keys.dtype, device=keys.device)
        for buffer, new in ((cache.cross_k, keys), (cache.cross_v, values)):
            buffer[:, :, :, :S].copy_(new)
            buffer[:, :, :, S:].zero_()   # an earlier, longer prompt's keys: masked, but no stale numbers kept
        cache.cross_bias[..., :S].copy_(crosses[0][2])
        cache.cross_bias[..., S:].fill_(torch.finfo(keys.dtype).min)

    def decode_step(self, codes: torch.Tensor, position: torch.Tensor, cache: KVCache,
                    adapters: Sequence[Adapter | None] | None = None, attend: int | None = None) -> torch.Tensor:
        """One position: codes (B, K, 1) at `position` (LongTensor (1,)) -> logits (B, K, V).

        `attend` (a Python int, > position; default the whole cache) is how many cache
        positions to attend over; pass `cache.attend_length(p)` so the work follows the
        filled length. The positions from `position` + 1 on are masked either way, so
        the logits do not depend on it.
        """
        x = self.embed(codes, position)  # (B, 1, D)
        attend = cache.length if attend is None else attend
        int8_layers = self._int8_layers(x)
        if int8_layers is not None:
            return self.logits(int8_layers(x, position, cache, self._adapters(adapters)))[:, :, 0]
        self_bias = cache.causal_bias[:, :attend].index_select(0, position)  # (1, attend)
        if self._fused_step is not None:
            return self.logits(self._fused_step(x, position, self_bias, cache, self._adapters(adapters)))[:, :, 0]
        has_text = cache.cross_k is not None
        for i, (layer, adapter) in enumerate(zip(self.layers, self._adapters(adapters))):
            cross = (cache.cross_k[i], cache.cross_v[i], cache.cross_bias) if has_text else None
            x = layer(x, position, self_bias, cross, decode_attention, adapter,
                      self_kv=(cache.self_k[i], cache.self_v[i]))
        return self.logits(x)[:, :, 0]

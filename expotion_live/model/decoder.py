"""Our MusicGen decoder: the transformer over the K EnCodec codebooks.

The math is transformers' `MusicgenForCausalLM` (pre-LayerNorm, sinusoidal positions,
summed codebook embeddings, T5 cross-attention, one LM head per codebook), written so
that we own the cache and the hot loop:

- `forward()`      whole sequence, no cache: with eager attention the slow, obvious reference
                   (with `fused_attention`, what training runs).
- `prefill()`      a prompt in one pass, writing a preallocated `KVCache` in place.
- `decode_step()`  one position: static shapes (attends over the first `attend_length`
                   cache positions, a Python int the loop rounds up to a bucket of
                   `ATTEND_BUCKET`, under a mask row picked by the position tensor),
                   no `.item()`, no branching on tensor values, nothing allocated that
                   grows per step. Its layers run on the decoder's `backend`, chosen
                   once per placement (`backends`: the modules, fused GPU kernels, or
                   numba kernels for an int8 decoder on the CPU).

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

import torch
import torch.nn.functional as F
from torch import nn

from ..features.schema import FRAME_RATE
from . import backends
from .attention import Attend, eager_attention, fused_attention
from .config import DecoderConfig
from .text import TextCondition

# decode_step attends over the filled cache rounded up to a multiple of this many positions:
# attention time grows with the filled length instead of the whole preallocated cache,
# while shapes, and so a compiled step's graph, change only once per bucket.
ATTEND_BUCKET = 64

Adapter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    `MusicGenDecoder._cache_zeros` in the memory order the decoder's backend reads:
    where our CPU kernels read them they are views of position-major storage
    (L, S, B, H, Dh), so that a step reads positions 0..p of every row and head of a
    layer as one contiguous run (`cpu_kernels.attend_one`); where SDPA reads them they
    are head-major, the layout its kernels are built for (position-major views slowed
    its bf16 CPU kernel down, `bench/decode.py`).
    """

    self_k: torch.Tensor              # (L, B, H, S, Dh)
    self_v: torch.Tensor
    causal_bias: torch.Tensor         # (S, S) row p: 0 for positions <= p, min elsewhere
    cross_k: torch.Tensor | None = None  # (L, B, H, S_text, Dh), filled by prefill
    cross_v: torch.Tensor | None = None
    cross_bias: torch.Tensor | None = None  # (B, 1, 1, S_text)
    position_major: bool = False      # the memory order above, that of the backend it was allocated for

    @property
    def length(self) -> int:
        return self.causal_bias.shape[0]

    def attend_length(self, position: int) -> int:
        """How many cache positions a step at `position` attends over: 0..position, rounded up to a bucket."""
        return min(self.length, (position // ATTEND_BUCKET + 1) * ATTEND_BUCKET)

    def step_bias(self, position: torch.Tensor, attend_length: int) -> torch.Tensor:
        """The causal mask row (1, attend_length) of a step at `position` (LongTensor (1,)), picked on the device."""
        return self.causal_bias[:, :attend_length].index_select(0, position)


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
        self.choose_backend()

    def choose_backend(self, name: str | None = None) -> None:
        """Run `decode_step`'s layers on backend `name` (see `backends`), or with None the fastest that fits.

        Called on every move or cast (`_apply`), which picks afresh: a backend holds views
        of this placement's weights. A cache allocated before keeps its memory order;
        allocate one after choosing. An unfitting `name` is a ValueError saying why.
        """
        name = backends.choose(self, name)   # an unfitting name raises before anything changes
        self.backend = None                  # the old backend's views and fused weights go before new ones are made
        self.backend = backends.build(self, name)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.choose_backend()   # moved, cast or given new projections: the old backend reads the old placement
        return self

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
                             f"(about {self.config.max_position_embeddings // FRAME_RATE} s): generate a shorter piece")
        c = self.config
        device = device or self.positions_table.device
        allowed = torch.ones(max_length, max_length, dtype=torch.bool, device=device).tril()
        shape = (c.num_hidden_layers, batch_size, c.num_attention_heads, max_length, c.head_dim)
        major = self.backend.position_major   # the memory order the backend's attention reads
        return KVCache(self_k=self._cache_zeros(shape, device, major), self_v=self._cache_zeros(shape, device, major),
                       causal_bias=additive_mask(allowed, self.dtype), position_major=major)

    def _cache_zeros(self, shape: tuple[int, ...], device, position_major: bool) -> torch.Tensor:
        """Zeros of shape (L, B, H, S, Dh), as views of (L, S, B, H, Dh) storage when `position_major`."""
        if position_major:
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
            cache.cross_k = self._cache_zeros((L, B, H, size, Dh), keys.device, cache.position_major)
            cache.cross_v = self._cache_zeros((L, B, H, size, Dh), keys.device, cache.position_major)
            cache.cross_bias = torch.empty(B, 1, 1, size, dtype=keys.dtype, device=keys.device)
        for buffer, new in ((cache.cross_k, keys), (cache.cross_v, values)):
            buffer[:, :, :, :S].copy_(new)
            buffer[:, :, :, S:].zero_()   # an earlier, longer prompt's keys: masked, but no stale numbers kept
        cache.cross_bias[..., :S].copy_(crosses[0][2])
        cache.cross_bias[..., S:].fill_(torch.finfo(keys.dtype).min)

    def decode_step(self, codes: torch.Tensor, position: torch.Tensor, cache: KVCache,
                    adapters: Sequence[Adapter | None] | None = None,
                    attend_length: int | None = None) -> torch.Tensor:
        """One position: codes (B, K, 1) at `position` (LongTensor (1,)) -> logits (B, K, V).

        `attend_length` (a Python int, > position; default the whole cache) is how many
        cache positions to attend over; pass `cache.attend_length(p)` so the work follows
        the filled length. The positions from `position` + 1 on are masked either way,
        so the logits do not depend on it. The layers run on `backend`.
        """
        x = self.embed(codes, position)  # (B, 1, D)
        attend_length = cache.length if attend_length is None else attend_length
        x = self.backend(x, position, cache, self._adapters(adapters), attend_length)
        return self.logits(x)[:, :, 0]

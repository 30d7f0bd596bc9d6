"""The Expotion condition adaptor (paper §3): face and motion steer a frozen MusicGen decoder.

Two parts, both trainable, while every MusicGen weight stays frozen:

1. The joint visual embedding (eq. 1-7). Features arrive already on the 50 Hz EnCodec
   grid (the timeline and `extract_video` do the eq. 1/3 interpolation). Face and pose
   vectors and the Flow-Embedding CNN's output are each projected to a few dimensions
   (d1, d2), concatenated, and a learned positional embedding is added.
2. The condition prefix (§3.2). A learned sequence `H0^p` runs through the last L
   frozen decoder layers beside the music. At each adapted layer the joint embedding is
   fused to the model width (`W_e`, one per layer as in the authors' code) plus a
   per-layer positional table and added after the layer's first LayerNorm; the prefix
   then goes through the layer's frozen self-attention (unmasked, or causal under a
   look-ahead limit, below) and feed-forward, but not the text cross-attention. The
   music stream's queries attend to the prefix keys and values through a
   zero-initialised gate, so an untrained adaptor is the base model.

The prefix never looks at the music tokens, so it is computed once per condition window
(`ConditionAdaptor.prefix`); the per-layer `FusedPrefixAttention`s it returns (together:
"the prefix") do only the fused attention for the queries of the current step, a
fixed-size computation the decode step can capture. Where a window sits on the decoder's
positions, and which positional rows its frames take, is the conditioning contract's
(`conditioning.py`): frame t of a window at `first` is position and row `first + t`.

Look-ahead (`AdaptorConfig.look_ahead`, L frames; None = unlimited, the paper): the code
at sequence position p attends only to prefix frames up to p's own moment + L. The paper
masks nothing, so in training a code sees the whole 10 s clip, seconds of movement after
its own moment; live, the newest code sits at the window's newest frame and nothing
after it exists yet, so a model that learned to read the beat from later movement finds
it missing. With a limit the prefix's own self-attention is causal (as in the authors'
code), so each prefix key carries only frames up to its own moment, and the fused
attention admits keys up to p + L: the logits at p depend on no frame after p + L,
exactly. A position before the window's first frame (+ L) gets no prefix term at all.

Look-back (`AdaptorConfig.look_back`, B frames; None = unlimited, the paper): the code at
p attends only to prefix frames from p's own moment - B on, and each prefix frame's
self-attention reaches back B frames too, so the terms the first n adapted layers add at p
reach no frame before p - n*B (the music's own self-attention still carries what the
earlier codes heard, as music should). Unlimited, the attention averages over the whole
window, and a movement seen once outweighs the stillness after it: the music never lets
go of a gesture that has stopped. A bounded memory is what makes the present audible.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path
from ..features.external import TRACKER, check_source
from ..features.schema import FACE_DIM, FLOW_DTYPE, FLOW_SHAPE, INPUTS, MOTION_DIM
from .conditioning import LIVE_LOOK_AHEAD, LIVE_LOOK_BACK, ChunkWindow
from .decoder import additive_mask

WEIGHTS_FILE = "adaptor.safetensors"
CONFIG_FILE = "adaptor.json"
FORMAT_VERSION = 2        # 2: positional rows anchored to the stream's positions (conditioning.py); 1 is read


class AdaptorError(ValueError):
    """An adaptor checkpoint or input that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class AdaptorConfig:
    d1: int = 12                        # eq. 2: face features projected to d1 dims (paper: 12)
    d2: int = 12                        # eq. 4: pose and flow features each projected to d2 dims (paper: 12)
    n_layers: int | None = None         # L: adapt the last L decoder layers; None = all (the authors' scripts)
    flow_cnn: bool = True               # eq. 5: the Flow-Embedding CNN over the optical flow (off = pose only)
    flow_channels: tuple[int, ...] = (32, 64)  # hidden conv widths of the flow CNN (stride 2 each)
    flow_dim: int = 256                 # eq. 5: flow embedding size (paper: 256)
    max_frames: int = 512               # longest prefix window (50 Hz frames): sizes H0^p and the positional tables
    face_dim: int = FACE_DIM            # input widths: the tracker's FeatureFrame vectors
    motion_dim: int = MOTION_DIM
    flow_shape: tuple[int, int, int] = FLOW_SHAPE
    inputs: str = "face+motion"         # Table 1's ablations: "face", "motion" (pose and flow) or both
    captions: bool = True               # trained on each clip's caption; False: all on the generic one ("Generic")
    look_ahead: int | None = LIVE_LOOK_AHEAD  # frames after its own a code may see (module docstring); None: all
    look_back: int | None = LIVE_LOOK_BACK    # frames before its own a code may see; None: all (the paper)
    face_source: str = TRACKER          # where face_dim's vectors come from: the tracker, or a features file's
    motion_source: str = TRACKER        # name (features/external.py: e.g. the paper's "raft"), which replaces pose and flow

    def __post_init__(self):
        if self.inputs not in INPUTS:
            raise AdaptorError(f"adaptor inputs {self.inputs!r} unknown; choose one of {', '.join(INPUTS)}")
        for name in ("look_ahead", "look_back"):
            frames = getattr(self, name)
            if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 0):
                raise AdaptorError(f"adaptor {name} {frames!r} must be a whole number of frames >= 0, "
                                   f"or None for unlimited")
        try:
            check_source(self.face_source), check_source(self.motion_source)
        except ValueError as err:
            raise AdaptorError(str(err)) from None
        if self.motion_source != TRACKER and self.flow_cnn:
            raise AdaptorError(f"motion source {self.motion_source!r} replaces the tracker's pose and flow: "
                               f"the flow CNN must be off (flow_cnn False)")

    @property
    def external_sources(self) -> tuple[str, ...]:
        """The feature sources other than the live tracker this adaptor reads (features/external.py)."""
        used = [(self.uses_face, self.face_source), (self.uses_motion, self.motion_source)]
        return tuple(source for uses, source in used if uses and source != TRACKER)

    @property
    def uses_face(self) -> bool:
        return self.inputs != "motion"

    @property
    def uses_motion(self) -> bool:
        return self.inputs != "face"

    @property
    def joint_dim(self) -> int:
        """Width of the concatenated low-rank embedding [z_f; z_m; z_flow] (eq. 6), less what an ablation leaves out."""
        motion = self.d2 + (self.d2 if self.flow_cnn else 0)
        return (self.d1 if self.uses_face else 0) + (motion if self.uses_motion else 0)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "AdaptorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdaptorError(f"unknown adaptor config key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        data = {"look_ahead": None, "look_back": None} | data   # older checkpoints saw the whole window (the paper)
        for name in ("flow_channels", "flow_shape"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


class FlowEmbedding(nn.Module):
    """Eq. (5): z_flow_t = F(F_t), 3x3 convolutions + ReLU, then adaptive average pooling."""

    def __init__(self, in_channels: int, hidden: tuple[int, ...], out_dim: int):
        super().__init__()
        widths = (in_channels, *hidden, out_dim)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = flow.shape
        x = self.convs(flow.reshape(B * T, C, H, W))            # (B*T, out_dim, h, w)
        return self.pool(x).reshape(B, T, -1)                   # (B, T, out_dim)


class JointVisualEmbedding(nn.Module):
    """Eq. (2), (4), (5) and the first half of (6): u_i = [z'_f; z'_m; z'_flow]_i + z_pos,i."""

    def __init__(self, config: AdaptorConfig):
        super().__init__()
        self.config = config
        if config.uses_face:
            self.face_proj = nn.Linear(config.face_dim, config.d1, bias=False)       # W_f, eq. (2)
        if config.uses_motion:
            self.motion_proj = nn.Linear(config.motion_dim, config.d2, bias=False)   # W_m, eq. (4)
        if config.uses_motion and config.flow_cnn:
            self.flow_cnn = FlowEmbedding(config.flow_shape[0], config.flow_channels, config.flow_dim)
            self.flow_proj = nn.Linear(config.flow_dim, config.d2, bias=False)   # eq. (5) then projected as eq. (4)
        self.pos = nn.Parameter(torch.zeros(config.max_frames, config.joint_dim))  # z_pos, eq. (6)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, face: torch.Tensor, motion: torch.Tensor, flow: torch.Tensor, first: int = 0) -> torch.Tensor:
        B, T, _ = face.shape
        parts = []
        if self.config.uses_face:
            parts.append(self.face_proj(face))                     # eq. (2): (B, T, d1)
        if self.config.uses_motion:
            parts.append(self.motion_proj(motion))                 # eq. (4): (B, T, d2)
            if self.config.flow_cnn:
                parts.append(self.flow_proj(self.flow_cnn(flow)))  # eq. (5): (B, T, d2)
        return torch.cat(parts, dim=-1) + self.pos[first:first + T]  # eq. (6), before W_e: (B, T, joint_dim)


class FusedPrefixAttention:
    """One adapted layer's part of the prefix: `g_l * S'_l` with S'_l = Attn(Q_l + Q^p_l, K^p_l, V^p_l).

    Holds the prefix's per-head queries, keys and values for one window, computed once.
    Called by the decoder with the music queries `q` (B, H, T, Dh) at sequence positions
    `positions` (T,); the prefix query of the same moment is added: prefix frame t sits at
    sequence position `first + t` (0 for a piece generated from its start; a live stream
    sets it so the window's newest frame meets the newest code), and positions outside
    the window reuse its first or last frame. With a `look_ahead` L (not None) the query
    at frame t attends to prefix frames up to t + L only, and a query with none gets no
    term; with a `look_back` B, to frames from t - B on (module docstring). When the
    decoder runs classifier-free guidance as a batch of 2B, both halves attend to the same
    prefix (the authors duplicated it), so guidance amplifies only the text; the halves'
    queries are stacked against one copy rather than copying the prefix, which the decode
    step would otherwise read twice per layer.

    `buffer(capacity)` makes one whose tensors stay where they are while `load` puts
    each new window into them (frames past the window masked): a captured decode step
    reads it without being captured again.
    """

    def __init__(self, q_p: torch.Tensor, k_p: torch.Tensor, v_p: torch.Tensor, gate: torch.Tensor,
                 look_ahead: int | None = None, first: int = 0, look_back: int | None = None):
        self.q_p, self.k_p, self.v_p = q_p, k_p, v_p    # (Bp, H, Tp, Dh) each
        self.gate = gate                                # () scalar g_l
        self.look_ahead, self.look_back = look_ahead, look_back
        device = k_p.device
        self.first = torch.full((), first, dtype=torch.long, device=device)        # position of prefix frame 0
        self.last = torch.full((), k_p.shape[2] - 1, dtype=torch.long, device=device)  # the newest frame's index
        self.bias: torch.Tensor | None = None           # (1, 1, 1, Tp): 0 inside the window, min past it
        self.frames = torch.arange(k_p.shape[2], device=device)                    # (Tp,) prefix frame indices

    def __call__(self, q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        B, H, T, Dh = q.shape
        Bp = self.k_p.shape[0]
        halves = B // Bp                                 # 2 under CFG: [conditional; null] share one prefix
        moments = positions - self.first                 # (T,) each query's frame in the window
        q_p = self.q_p.index_select(2, moments.clamp(min=0).minimum(self.last)).to(q.dtype)  # Q^p at those frames
        q = q.view(halves, Bp, H, T, Dh) + q_p                                       # Q_l + Q^p_l
        q = q.permute(1, 2, 0, 3, 4).reshape(Bp, H, halves * T, Dh)                 # (Bp, H, halves*T, Dh)
        if self.look_ahead is None and self.look_back is None:
            bias = None if self.bias is None else self.bias.to(q.dtype)
        else:
            newest = self.last if self.look_ahead is None else (moments + self.look_ahead).minimum(self.last)
            last_seen = newest.expand(T).clamp(min=0)[:, None]   # (T, 1) the last frame each sees; a row that
            seen = self.frames <= last_seen                      # sees none keeps frame 0: no NaN in fp16
            if self.look_back is not None:                       # past the window, its last frame stays in sight
                seen &= self.frames >= (moments - self.look_back)[:, None].minimum(last_seen)
            bias = additive_mask(seen.repeat(halves, 1), q.dtype)                    # (halves*T, Tp)
        s_prime = F.scaled_dot_product_attention(q, self.k_p.to(q.dtype), self.v_p.to(q.dtype), attn_mask=bias)
        s_prime = s_prime.view(Bp, H, halves, T, Dh).permute(2, 0, 1, 3, 4).reshape(B, H, T, Dh)
        if self.look_ahead is not None:                  # a query before the window's first frame sees none
            s_prime = s_prime * (newest >= 0).to(q.dtype)[:, None]
        return self.gate.to(q.dtype) * s_prime           # (B, H, T, Dh)

    def load(self, window: "FusedPrefixAttention", first: int) -> None:
        """Copy `window`'s prefix into these buffers, its frame 0 at sequence position `first`."""
        if (window.look_ahead, window.look_back) != (self.look_ahead, self.look_back):
            raise AdaptorError(f"a prefix with look-ahead {window.look_ahead} and look-back {window.look_back} does "
                               f"not fit a buffer made for {self.look_ahead} and {self.look_back}; make the buffers "
                               f"from this adaptor")
        self.write(window.q_p, window.k_p, window.v_p, 0)
        self.first.fill_(first)

    def write(self, q_p: torch.Tensor, k_p: torch.Tensor, v_p: torch.Tensor, row: int) -> None:
        """Put frames `row`.. of the window (Bp, H, T, Dh each) in place; the window now ends with them."""
        end = row + k_p.shape[2]
        if end > self.k_p.shape[2] or k_p.shape[:2] != self.k_p.shape[:2]:
            raise AdaptorError(f"a prefix of shape {tuple(k_p.shape)} at row {row} does not fit a buffer of "
                               f"{tuple(self.k_p.shape)}")
        for own, new in ((self.q_p, q_p), (self.k_p, k_p), (self.v_p, v_p)):
            own[:, :, row:end].copy_(new)
        self.bias[..., :end] = 0.0
        self.bias[..., end:] = torch.finfo(self.bias.dtype).min
        self.last.fill_(end - 1)


class PrefixBuffers:
    """A stream's prefix: per adapted layer, a `FusedPrefixAttention` over `capacity` frames that stays in
    place (a captured decode step reads each new window where the last one was).

    Filled by `ConditionAdaptor.fill`: streamed (frame t at position t, the positions [0, `filled`)
    computed once each) under a look-ahead limit, else the window recomputed per chunk.
    """

    def __init__(self, adaptor: "ConditionAdaptor", capacity: int):
        decoder = adaptor.decoder
        H = decoder.config.num_attention_heads
        shape = (1, H, capacity, decoder.config.hidden_size // H)
        device, dtype = adaptor.prefix_init.device, decoder.dtype
        self.adaptor, self.capacity = adaptor, capacity
        self.filled = 0
        self.layers: list[FusedPrefixAttention | None] = [None] * adaptor.first_layer
        for i in range(len(adaptor.merge)):
            q_p, k_p, v_p = (torch.zeros(shape, dtype=dtype, device=device) for _ in range(3))
            layer = FusedPrefixAttention(q_p, k_p, v_p, adaptor.gates[i], adaptor.config.look_ahead,
                                         look_back=adaptor.config.look_back)
            layer.bias = k_p.new_zeros(1, 1, 1, capacity)
            self.layers.append(layer)
        self.reset()

    def serves(self, adaptor: "ConditionAdaptor", capacity: int) -> bool:
        return adaptor is self.adaptor and capacity == self.capacity

    def reset(self) -> None:
        """Empty: the stream (re)starts at position 0."""
        self.filled = 0
        for layer in self.adapted():
            layer.first.fill_(0)
            layer.bias.fill_(torch.finfo(layer.bias.dtype).min)
            layer.last.fill_(0)

    def adapted(self) -> list[FusedPrefixAttention]:
        return [layer for layer in self.layers if layer is not None]

    def load(self, prefix: Sequence[FusedPrefixAttention | None], first: int) -> None:
        """A whole window's prefix (`ConditionAdaptor.prefix`), its frame 0 at position `first`."""
        for buffer, layer in zip(self.layers, prefix):
            if layer is not None:
                buffer.load(layer, first)
        self.filled = 0

    def shift(self, positions: int) -> None:
        """Move every layer's window by `positions` (a slide without a new prefix)."""
        for buffer in self.adapted():
            buffer.first.add_(positions)


class ConditionAdaptor(nn.Module):
    """The trainable part of Expotion, attached to a frozen decoder (which it does not own).

    The decoder is kept outside the module tree, so `parameters()`, `state_dict()`,
    optimisers, DDP and checkpoints see only the adaptor's own weights.
    """

    def __init__(self, config: AdaptorConfig, decoder: nn.Module):
        super().__init__()
        base = decoder.config
        n_total = base.num_hidden_layers
        n_layers = n_total if config.n_layers is None else config.n_layers
        if not 1 <= n_layers <= n_total:
            raise AdaptorError(f"n_layers={config.n_layers} but the decoder has {n_total} layers")
        self.config = config
        self.first_layer = n_total - n_layers              # adapted layers: N-L+1 .. N (1-based)
        self.hidden_size = base.hidden_size
        self.__dict__["decoder"] = decoder                 # frozen and not a submodule (see class docstring)
        decoder.requires_grad_(False)

        d = base.hidden_size
        self.embedding = JointVisualEmbedding(config)
        self.prefix_init = nn.Parameter(torch.randn(config.max_frames, d) * 0.02)                 # H0^p
        self.merge = nn.ModuleList(nn.Linear(config.joint_dim, d, bias=False) for _ in range(n_layers))  # W_e per layer
        self.layer_pos = nn.Parameter(torch.randn(n_layers, config.max_frames, d) * 0.02)        # pos_l
        self.gates = nn.Parameter(torch.zeros(n_layers))                                            # g_l, init 0
        self.trained: dict = {}   # what it was trained under (conditioning.recorded_settings, windows, dropout)
        self.to(next(decoder.parameters()).device)

    @property
    def base_shape(self) -> dict:
        """The decoder dimensions this adaptor fits; stored with checkpoints to reject other bases."""
        cfg = self.decoder.config
        return {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads, "num_codebooks": cfg.num_codebooks}

    def prefix(self, features, window: ChunkWindow) -> list[FusedPrefixAttention | None]:
        """The prefix over the newest `window.frames` frames of `features`, at the window's positions.

        Anything with face / motion / flow arrays and `n_frames` will do (a TimelineWindow,
        a prepared clip); it must hold at least the window's frames.
        """
        if features.n_frames < window.frames:
            raise AdaptorError(f"a condition window of {window.frames} frames from features of {features.n_frames}")
        return self.adapters(*self._batch(features, slice(features.n_frames - window.frames, None)),
                             first=window.first)

    def adapters(self, face: torch.Tensor, motion: torch.Tensor, flow: torch.Tensor,
                 first: int = 0) -> list[FusedPrefixAttention | None]:
        """Run the condition prefix over one window: one `FusedPrefixAttention` per decoder layer (None = unadapted).

        face (B, T, face_dim), motion (B, T, motion_dim), flow (B, T, *flow_shape), all on
        the 50 Hz grid; frame t conditions decoder sequence position `first` + t and takes
        positional row `first` + t (the conditioning contract).
        """
        layers = self._prefix_layers(face, motion, flow, first)
        cfg = self.config
        return [None] * self.first_layer + [
            FusedPrefixAttention(q_p, k_p, v_p, self.gates[i], cfg.look_ahead, first, cfg.look_back)
            for i, (q_p, k_p, v_p) in enumerate(layers)]

    def fill(self, buffers: PrefixBuffers, features, window: ChunkWindow) -> None:
        """Make `buffers` hold the prefix of `window` over the newest frames of `features` (as `prefix`).

        Under a look-ahead limit the prefix is causal, so the positions the buffers already hold
        keep their states and only the window's new positions are computed, attending to them
        (streamed: equal to recomputing the window). Unlimited (the paper), every frame sees
        every other: the window is recomputed, as many of its frames as `features` holds.
        """
        if self.config.look_ahead is None or window.first != 0 or buffers.filled > window.newest + 1:
            frames = min(window.frames, features.n_frames)
            window = ChunkWindow(done=window.done, n=window.n, frames=frames, first=window.newest - frames + 1,
                                 K=window.K)
            buffers.load(self.prefix(features, window), window.first)
            return
        start, end = buffers.filled, window.newest + 1
        if features.n_frames < end - start:
            raise AdaptorError(f"{end - start} new prefix frames from features of {features.n_frames}")
        if end > start:
            span = slice(features.n_frames - (end - start), None)
            layers = self._prefix_layers(*self._batch(features, span), start, past=buffers)
            for buffer, (q_p, k_p, v_p) in zip(buffers.adapted(), layers):
                buffer.write(q_p, k_p, v_p, start)
        buffers.filled = end

    def _batch(self, features, span: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(face, motion, flow) rows `span` of `features` as (1, T, ...) float32 on the adaptor's device,
        the flow at the precision prepared clips keep it (FLOW_DTYPE)."""
        def batch(x: np.ndarray, span: slice = span) -> torch.Tensor:   # a copy: clips may be read-only
            return torch.from_numpy(np.array(x[span], dtype=np.float32))[None].to(self.prefix_init.device)

        flow = np.asarray(features.flow[span], dtype=FLOW_DTYPE)
        return batch(features.face), batch(features.motion), batch(flow, slice(None))

    def _prefix_layers(self, face: torch.Tensor, motion: torch.Tensor, flow: torch.Tensor, first: int,
                       past: PrefixBuffers | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(Q^p_l, K^p_l, V^p_l) (B, H, T, Dh) of each adapted layer for frames at positions `first`..,
        their self-attention reaching back to the positions `past` holds (streamed) or within the window."""
        self._check_inputs(face, motion, flow, first)
        face, motion, flow = (x.to(self.prefix_init.dtype) for x in (face, motion, flow))  # e.g. float16 flow
        B, T, _ = face.shape
        rows = slice(first, first + T)
        dtype = self.decoder.dtype
        joint = self.embedding(face, motion, flow, first)              # eq. (6) before W_e: (B, T, joint_dim)
        h = self.prefix_init[rows].expand(B, T, self.hidden_size).to(dtype)   # H0^p: (B, T, d)
        start = 0 if past is None else first                           # key rows before the new frames
        mask = None
        keys = torch.arange(start + T, device=face.device)[None, :]
        queries = (start + torch.arange(T, device=face.device))[:, None]
        if self.config.look_ahead is not None:                         # causal (module docstring)
            mask = keys <= queries                                     # (T, start + T)
        if self.config.look_back is not None:                          # and reaching back look_back frames
            recent = keys >= queries - self.config.look_back
            mask = recent if mask is None else mask & recent
        layers = []
        adapted = self.decoder.layers[self.first_layer:]
        for i, layer in enumerate(adapted):
            z = self.merge[i](joint) + self.layer_pos[i, rows]         # Z_l = W_e,l^T u + pos_l: (B, T, d)
            x = layer.self_attn_layer_norm(h) + z.to(dtype)            # H_l^p + Z_l, after the first norm
            attn = layer.self_attn
            q_p = attn.split_heads(attn.q_proj(x))                     # Q_l^p, K_l^p, V_l^p: (B, H, T, Dh)
            k_p, v_p = attn.keys_values(x)
            keys, values = k_p, v_p
            if past is not None:                                       # the frames before, as computed then
                held = past.layers[self.first_layer + i]
                keys = torch.cat([held.k_p[:, :, :start].expand(B, -1, -1, -1), k_p], dim=2)
                values = torch.cat([held.v_p[:, :, :start].expand(B, -1, -1, -1), v_p], dim=2)
            a = F.scaled_dot_product_attention(q_p, keys, values, attn_mask=mask)   # prefix self-attention
            h = h + attn.merge_heads(a)                                # (B, T, d)
            h = h + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(h))))           # frozen feed-forward
            layers.append((q_p, k_p, v_p))
        return layers

    def _check_inputs(self, face: torch.Tensor, motion: torch.Tensor, flow: torch.Tensor, first: int) -> None:
        cfg = self.config
        B, T = face.shape[:2]
        expected = {"face": (face, (B, T, cfg.face_dim)), "motion": (motion, (B, T, cfg.motion_dim)),
                    "flow": (flow, (B, T, *cfg.flow_shape))}
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise AdaptorError(f"{name} features have shape {tuple(tensor.shape)}, expected {shape}")
        if T < 1 or first < 0 or first + T > cfg.max_frames:
            raise AdaptorError(f"a condition window of {T} frames at positions {first}..{first + T - 1}; this adaptor "
                               f"has positions 0..{cfg.max_frames - 1} ({cfg.max_frames / 50:.2f} s at 50 Hz): "
                               f"keep generation.window_seconds at most that")

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_adaptor(adaptor: ConditionAdaptor, out_dir: str | os.PathLike) -> Path:
    """Write `adaptor.safetensors` and `adaptor.json` into `out_dir`, each atomically.

    The safetensors metadata holds the same JSON, so a weights file never pairs silently
    with the config of a different run.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    header = {"format": FORMAT_VERSION, "config": adaptor.config.to_json(), "base": adaptor.base_shape,
              "trained": adaptor.trained}
    text = json.dumps(header, indent=2, sort_keys=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in adaptor.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"expotion_adaptor": text})
    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return out_dir


def load_adaptor(path: str | os.PathLike, musicgen) -> ConditionAdaptor:
    """Load an adaptor directory (or its .safetensors file) onto `musicgen.decoder` (or a decoder).

    Errors name the file and what is wrong: missing files, a config of another run, a
    checkpoint trained for a different base model, or tensors of the wrong shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    weights, config_file = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    for file in (weights, config_file):
        if not file.is_file():
            raise AdaptorError(f"adaptor checkpoint {file} does not exist (expected {WEIGHTS_FILE} and "
                               f"{CONFIG_FILE} from `expotion-live train`)")
    try:
        header = json.loads(config_file.read_text(encoding="utf-8"))
        with safe_open(str(weights), framework="pt") as f:
            stored = (f.metadata() or {}).get("expotion_adaptor")
        state = load_file(str(weights))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdaptorError(f"{config_file} is not valid JSON: {err}") from None
    except (SafetensorError, OSError) as err:
        raise AdaptorError(f"{weights} is not a readable safetensors file: {err}") from None
    if stored is None or json.loads(stored) != header:
        raise AdaptorError(f"{config_file} does not belong to {weights} (different runs mixed); "
                           f"copy both files from the same checkpoint folder")
    if header.get("format") not in (1, FORMAT_VERSION):
        raise AdaptorError(f"{config_file}: adaptor format {header.get('format')}, this program reads 1 and "
                           f"{FORMAT_VERSION}")

    decoder = getattr(musicgen, "decoder", musicgen)
    try:
        adaptor = ConditionAdaptor(AdaptorConfig.from_json(header["config"]), decoder)
    except AdaptorError as err:     # e.g. more adapted layers than this decoder has
        raise AdaptorError(f"{weights}: {err}; load the base model it was trained on") from None
    if header["base"] != adaptor.base_shape:
        raise AdaptorError(f"{weights} was trained for a decoder {_describe(header['base'])}, but the loaded "
                           f"model is {_describe(adaptor.base_shape)}; load the base model it was trained on")
    own = adaptor.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise AdaptorError(f"{weights}: tensor names do not match this adaptor "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise AdaptorError(f"{weights}: tensor {name} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(own[name].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise AdaptorError(f"{weights}: tensor {name} holds NaN or infinite values (a damaged file or a "
                               f"diverged training run); use another checkpoint of the run")
    adaptor.load_state_dict(state)
    adaptor.trained = header.get("trained", {})
    return adaptor


def check_live_sources(adaptor: ConditionAdaptor | None) -> None:
    """Refuse, in one line, an adaptor that reads features a live session cannot compute (only the tracker's)."""
    external = adaptor.config.external_sources if adaptor is not None else ()
    if external:
        raise AdaptorError(f"this adaptor reads {' and '.join(external)} features from files, which live and "
                           f"video generation cannot compute: use it with `evaluate` on prepared clips, or train "
                           f"one on the tracker's features")


def _describe(base: dict) -> str:
    return (f"with {base['num_hidden_layers']} layers of width {base['hidden_size']} "
            f"and {base['num_attention_heads']} heads")


def trainable_share(adaptor: ConditionAdaptor) -> tuple[int, int, float]:
    """(adaptor parameters, frozen decoder parameters, adaptor share of decoder + adaptor in %)."""
    own = adaptor.parameter_count()
    frozen = sum(p.numel() for p in adaptor.decoder.parameters())
    return own, frozen, 100.0 * own / (own + frozen)


__all__ = ["AdaptorConfig", "AdaptorError", "ConditionAdaptor", "FusedPrefixAttention", "check_live_sources",
           "load_adaptor", "save_adaptor", "trainable_share"]

"""`MusicGen`: text (+ optional earlier codes, + optional adaptor) -> codes -> audio.

The facade everything else calls: the live engine, training, the `generate` command.
Generation is one prefill of the start token and any prompt codes, then one
`decode_step` per position with classifier-free guidance as a batch of two
[conditional; null text], over the delay pattern (see `delay_pattern`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..features.schema import FRAME_RATE
from .codec import Codec
from .config import DecoderConfig
from .decoder import Adapter, KVCache, MusicGenDecoder
from .delay_pattern import UNKNOWN, DelayPattern
from .precision import apply_precision, module_dtype, resolve_precision
from .sampling import guide, sample
from .text import TextCondition, TextEncoder

Progress = Callable[[int, int], None]  # (steps done, steps in total)


def resolve_device(device: str) -> torch.device:
    """'auto' = CUDA when present, else CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA GPU is available: use --device cpu")
    return resolved


def decode_backend_name(device: str = "auto", precision: str = "auto") -> str:
    """The decode backend `MusicGen.load` gives a model on `device` at `precision` (see `backends`).

    Found by the load's own rule, applied to a tiny random decoder: no weights are read.
    """
    device = resolve_device(device)
    tiny = DecoderConfig(vocab_size=8, num_codebooks=1, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         ffn_dim=8, max_position_embeddings=8)
    return apply_precision(MusicGenDecoder(tiny), resolve_precision(precision, device), device).backend.name


class MusicGen:
    """The frozen base model: our decoder, T5 text encoder and EnCodec, on one device."""

    frame_rate = FRAME_RATE  # EnCodec frames per second: `load_codec` holds the codec to it

    def __init__(self, decoder: MusicGenDecoder, text_encoder: TextEncoder, codec: Codec, precision: str = "fp32"):
        self.decoder = decoder
        self.text_encoder = text_encoder
        self.codec = codec
        self.precision = precision
        self.sample_rate: int = codec.sample_rate
        self.device = decoder.positions_table.device
        self._cache: KVCache | None = None  # reused while the shape repeats (the live engine's chunks)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str = "cpu", precision: str = "auto") -> "MusicGen":
        """Load a transformers-format MusicGen directory; `precision` is applied to the decoder only."""
        from .loading import load_codec, load_decoder, load_text_encoder, open_checkpoint

        device = resolve_device(str(device))
        ckpt = open_checkpoint(model_dir)
        precision = resolve_precision(precision, device)    # "auto" = the device's default
        decoder = load_decoder(ckpt, device, module_dtype(precision, device))   # no fp32 copy on a GPU
        apply_precision(decoder, precision, device)   # and with it the decode backend (`decoder.backend`)
        return cls(decoder, load_text_encoder(ckpt, device), load_codec(ckpt, device), precision)

    def encode_text(self, prompts: list[str]) -> TextCondition:
        return self.text_encoder(prompts)

    def decode_audio(self, codes: torch.Tensor) -> np.ndarray:
        """codes (B, 4, T) -> float32 audio (B, T * hop_length) at `sample_rate`."""
        return self.codec.decode(codes)

    @torch.no_grad()
    def generate(self, text: TextCondition, n_frames: int, prompt_codes: torch.Tensor | None = None,
                 cfg: float = 3.0, temperature: float = 1.0, top_k: int = 250, top_p: float = 0.0,
                 greedy: bool = False, seed: int | None = None,
                 adapters: Sequence[Adapter | None] | None = None,
                 progress: Progress | None = None) -> torch.LongTensor:
        """New codes (B, K, n_frames) following `prompt_codes` (B, K, P), delay pattern undone.

        The prompt is prefilled in one forward pass, so continuing from P frames gives
        the same tokens as generating the P frames and the rest straight through.
        cfg <= 1 turns guidance off (no null batch).
        """
        B, K = text.batch_size, self.decoder.config.num_codebooks
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 (or use greedy), got {temperature}")
        if prompt_codes is None:
            prompt_codes = torch.zeros(B, K, 0, dtype=torch.long)
        if prompt_codes.shape[:2] != (B, K):
            raise ValueError(f"prompt codes of shape {tuple(prompt_codes.shape)} do not match "
                             f"{B} prompts x {K} codebooks")
        P = prompt_codes.shape[-1]

        pattern = DelayPattern(K, P + n_frames, self.decoder.config.pad_token_id, self.device)
        seq = pattern.build(prompt_codes.to(self.device))  # (B, K, S) delayed, UNKNOWN to fill
        guided = cfg > 1.0
        condition = (text.with_null() if guided else text).to(self.device)
        cache = self._cache_for(condition.batch_size, pattern.length - 1)
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()  # a fresh, non-deterministic seed
        else:
            generator.manual_seed(seed)

        def pick(logits: torch.Tensor) -> torch.Tensor:  # (B or 2B, K, V) -> (B, K)
            logits = guide(logits, cfg) if guided else logits
            return sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                          generator=generator)

        start = pattern.prefill_length(P)
        prefix = seq[:, :, :start]
        logits = self.decoder.prefill(torch.cat([prefix, prefix]) if guided else prefix, cache, condition, adapters)
        self._decode_loop(seq, start, logits, pick, cache, guided, adapters, progress)
        return pattern.undo(seq)[:, :, P:]

    def _cache_for(self, batch_size: int, length: int) -> KVCache:
        """A KV cache of this shape, allocated once and reused by later calls of the same shape.

        Allocating and zeroing it is a noticeable share of a short generation; reuse is
        safe because entries past the current position are always masked, and a generation
        overwrites every position it reads. One generation at a time per MusicGen.
        """
        cache, decoder = self._cache, self.decoder
        if (cache is None or cache.self_k.shape[1] != batch_size or cache.causal_bias.shape[0] != length
                or cache.self_k.dtype != decoder.dtype   # the decoder was cast, or has another backend, since
                or cache.position_major != decoder.backend.position_major):
            cache = self._cache = self.decoder.allocate_cache(batch_size, length, self.device)
        return cache

    def _decode_loop(self, seq, start, logits, pick, cache, guided, adapters, progress) -> None:
        """Fill seq's UNKNOWN places from position `start` on, one decode_step per position (in place)."""
        B, K, S = seq.shape
        positions = torch.arange(S, device=seq.device)
        copies = 2 if guided else 1  # the CFG batch feeds the same codes to both halves
        step_codes = torch.empty(copies, B, K, dtype=torch.long, device=seq.device)
        total = S - start
        for p in range(start, S):
            column = seq[:, :, p]  # (B, K): pads and prompt frames stay, UNKNOWN is generated
            column.copy_(torch.where(column == UNKNOWN, pick(logits), column))
            if p + 1 < S:
                step_codes.copy_(column.expand(copies, B, K))
                logits = self.decoder.decode_step(step_codes.view(copies * B, K, 1), positions[p:p + 1],
                                                  cache, adapters, attend_length=cache.attend_length(p))
            if progress is not None:
                progress(p + 1 - start, total)


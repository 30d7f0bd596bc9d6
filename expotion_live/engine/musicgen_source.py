"""MusicGen as a `MusicSource`: each chunk continues the recent codes, conditioned on text and the window.

Per chunk:
1. Text: the prompt (plus steering words when no adaptor is loaded) goes through T5
   only when it changed since the last chunk; otherwise the cached states are reused.
2. Visual condition: the latest window goes through the adaptor (`adaptor.adapters`),
   which returns one hook per decoder layer. The window holds context + chunk frames,
   so its frame t lines up with decoder sequence position t; its newest frames (the
   performer now) condition the new codes.
3. Codes: `MusicGen.generate` prefills the last `context_frames` codes as the prompt
   in one forward pass and samples `n_frames` new ones (KV-cached decoding).
4. Audio: EnCodec is not causal, so the last samples of a decode (no future context)
   differ from what the same codes sound like once more codes follow. Each chunk
   therefore re-decodes `decode_context_frames` earlier codes with the new ones and
   keeps only the tail: its first `overlap_samples` are a better rendering of the
   previous chunk's held-back end, which the scheduler crossfades with it.
"""
from __future__ import annotations

import numpy as np
import torch

from ..features.schema import TimelineWindow
from .source import FRAME_RATE, ChunkRequest


class MusicGenSource:
    """Chunks of MusicGen continuation (see module docstring); optional adaptor and prompt steering."""

    def __init__(self, musicgen, adaptor=None, steering=None, *, context_frames: int = 200,
                 decode_context_frames: int = 10, steer_prompt: bool = True, seed: int | None = None):
        self.musicgen = musicgen
        self.sample_rate: int = musicgen.sample_rate
        self.hop = musicgen.sample_rate // FRAME_RATE           # samples per code frame (640)
        self.adaptor = adaptor
        self.steering = steering
        self.steer_prompt = steer_prompt
        self.context_frames = context_frames
        self.decode_context_frames = decode_context_frames
        self.seed = seed                                        # None = fresh randomness per chunk
        self._history: torch.Tensor | None = None               # (1, K, <= kept) most recent codes
        self._text_prompt: str | None = None
        self._text = None
        self.prompt_used = ""                                   # the full prompt of the last chunk
        self.steering_words: tuple[str, ...] = ()
        self.text_encodings = 0                                 # T5 runs so far (re-encodes only on change)

    def set_adaptor(self, adaptor) -> None:
        """Swap the adaptor (or None); the next chunk uses it."""
        self.adaptor = adaptor

    def _condition_text(self, request: ChunkRequest):
        adaptor = self.adaptor
        prompt = request.params.prompt
        words: tuple[str, ...] = ()
        if adaptor is None and self.steer_prompt and self.steering is not None:
            prompt, words = self.steering.steer(prompt, request.window)
        self.steering_words = words
        if prompt != self._text_prompt:
            self._text = self.musicgen.encode_text([prompt])
            self._text_prompt = prompt
            self.text_encodings += 1
        self.prompt_used = prompt
        return self._text, adaptor

    def _adapters(self, adaptor, window: TimelineWindow, sequence_frames: int):
        """Hooks for a sequence of prompt + new frames: the window's newest frames meet the new codes."""
        if adaptor is None:
            return None
        return adaptor.window_adapters(window, sequence_frames, newest=True)

    @torch.no_grad()
    def render(self, request: ChunkRequest) -> np.ndarray:
        text, adaptor = self._condition_text(request)
        params = request.params
        n = request.n_frames
        prompt = None
        if self._history is not None and self.context_frames > 0:
            prompt = self._history[:, :, -self.context_frames:]
        seed = None if self.seed is None else self.seed + request.index
        P = 0 if prompt is None else prompt.shape[-1]
        adapters = self._adapters(adaptor, request.window, P + n)
        new = self.musicgen.generate(text, n, prompt_codes=prompt, cfg=params.cfg, temperature=params.temperature,
                                     top_k=params.top_k, top_p=params.top_p, seed=seed,
                                     adapters=adapters)                                  # (1, K, n)
        new = new.cpu()
        history = new if self._history is None else torch.cat([self._history, new], dim=-1)
        overlap_frames = -(-request.overlap_samples // self.hop)            # the overlap itself must be re-decoded
        before = min(max(self.decode_context_frames, overlap_frames), history.shape[-1] - n)
        audio = self.musicgen.decode_audio(history[:, :, -(before + n):])[0]   # ((before + n) * hop,)
        self._history = history[:, :, -max(self.context_frames, self.decode_context_frames, overlap_frames, 1):]
        wanted = request.overlap_samples + n * self.hop
        if len(audio) < wanted:                                # no earlier codes to render the overlap from
            audio = np.concatenate([np.zeros(wanted - len(audio), np.float32), audio])
        return np.ascontiguousarray(audio[-wanted:], dtype=np.float32)

    def warm_up(self, prompt: str) -> None:
        """Run both paths once on throwaway frames (a fresh start, then a continuation of a full
        context) so neither the first chunk nor the first continuation pays for cold caches."""
        text = self.musicgen.encode_text([prompt])
        codes = self.musicgen.generate(text, 2, seed=0)
        context = codes[:, :, :1].repeat(1, 1, max(self.context_frames, 1))    # (1, K, context)
        more = self.musicgen.generate(text, 2, prompt_codes=context, seed=0)
        before = context[:, :, max(context.shape[-1] - self.decode_context_frames, 0):]
        self.musicgen.decode_audio(torch.cat([before, more], dim=-1))

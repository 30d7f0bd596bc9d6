"""MusicGen as a `MusicSource`: one generation streamed for the whole session, conditioned on text and the window.

Per chunk:
1. Text: the prompt (plus steering words when no adaptor is loaded) goes through T5
   once per prompt among the last `RECENT_PROMPTS`; when it changed since the last
   chunk, only the cross-attention keys and values of the stream are rewritten.
2. Visual condition: the stream says where the chunk's condition window sits
   (`GenerationStream.next_window`, the conditioning contract: from position 0 to the
   chunk's last, the performer now at its newest); the adaptor fills the stream's prefix
   buffers from the latest window (`ConditionAdaptor.fill`: under a look-ahead limit only
   the positions the last chunks did not reach, each frame's prefix computed once).
3. Codes: the `GenerationStream` decodes the chunk's frames, continuing the delay pattern
   and the KV cache where the last chunk left them (no re-prefill); when its window is
   full it slides, prefilling the last `context_frames` codes once, right after the chunk
   before (`prepare_next`: while the ring is full), so the chunk that follows does not wait for it;
   with an adaptor, under the prefix the contract gives those positions (`StreamLayout.slide_window`).
4. Audio: EnCodec is not causal, so the last samples of a decode (no future context)
   differ from what the same codes sound like once more codes follow. Each chunk
   therefore re-decodes `decode_context_frames` earlier codes with the new ones and
   keeps only the tail: its first `overlap_samples` are a better rendering of the
   previous chunk's held-back end, which the scheduler crossfades with it.
"""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch

from ..features.schema import FRAME_RATE, TimelineWindow
from ..model.adaptor import AdaptorError, check_live_sources, load_adaptor
from ..model.conditioning import chunk_window
from ..model.stream import GenerationStream, Sampling
from ..model.text import TextCondition
from .source import ChunkRequest, GenerationParams, SourceState

RECENT_PROMPTS = 16    # T5 outputs kept: a few KB each, and steering's prompts recur


class MusicGenSource:
    """Chunks of streamed MusicGen (see module docstring); optional adaptor and prompt steering."""

    takes_adaptor = True

    def __init__(self, musicgen, adaptor=None, steering=None, *, context_frames: int = 200,
                 window_frames: int = 500, decode_context_frames: int = 10, steer_prompt: bool = True,
                 seed: int | None = None, name: str = "MusicGen"):
        self.musicgen = musicgen
        self.name = name
        self.sample_rate: int = musicgen.sample_rate
        self.hop = musicgen.sample_rate // FRAME_RATE           # samples per code frame (640)
        self.adaptor = None
        self.steering = steering
        self.steer_prompt = steer_prompt
        self.context_frames = context_frames
        self.decode_context_frames = decode_context_frames
        self.stream = GenerationStream(musicgen, window=window_frames, context=context_frames, seed=seed)
        self.set_adaptor(adaptor)
        self._history: torch.Tensor | None = None               # (1, K, <= kept) the last codes, for EnCodec
        self._text_prompt: str | None = None
        self._encoded: OrderedDict[str, TextCondition] = OrderedDict()   # recent prompts' T5 outputs, newest last
        self.prompt_used = ""                                   # the full prompt of the last chunk
        self.steering_words: tuple[str, ...] = ()
        self.text_encodings = 0                                 # T5 runs so far (once per recent prompt)
        self.last_codes: torch.Tensor | None = None             # (1, K, n) the last chunk's new codes, on the CPU
        self.last_frame_times = np.zeros(0)                     # (n,) for each: the time of the frame at its position
        self._condition_time = 0.0                               # `condition_time` of the last chunk
        self._last_window: TimelineWindow | None = None          # the last features filled in (a slide's prefix)
        self._position_times = np.zeros(window_frames)            # the time of the frame at each stream position
        self.warm_up_rtf: float | None = None                     # measured by `warm_up`
        self.codec_seconds = 0.0                                  # wall time of the chunks' EnCodec decodes

    @classmethod
    def from_settings(cls, musicgen, adaptor, steering, generation, name: str = "MusicGen") -> MusicGenSource:
        """With the stream's context, window and re-decode lengths and the seed of the [generation] settings
        (settings.GenerationSettings): the live app and the offline render build the same source."""
        def frames(seconds: float) -> int:
            return round(seconds * musicgen.frame_rate)

        return cls(musicgen, adaptor, steering, context_frames=frames(generation.context_seconds),
                   window_frames=frames(generation.window_seconds),
                   decode_context_frames=frames(generation.decode_context_seconds),
                   steer_prompt=generation.steer_prompt, seed=None if generation.seed < 0 else generation.seed,
                   name=name)

    def set_adaptor(self, adaptor) -> None:
        """Swap the adaptor (or None); the next chunk uses it."""
        check_live_sources(adaptor)                             # the window holds the tracker's features only
        if adaptor is not None and self.stream.window > adaptor.config.max_frames:
            raise AdaptorError(f"the stream's window of {self.stream.window} positions exceeds the adaptor's "
                               f"{adaptor.config.max_frames}: set generation.window_seconds to at most "
                               f"{adaptor.config.max_frames / FRAME_RATE:g}")
        self.adaptor = adaptor

    def condition_lag_frames(self, n_frames: int) -> int:
        """With an adaptor, the contract's `ChunkWindow.lag_frames` (the same after any slide); without
        one, 0: the prompt steers the chunk from its first code."""
        if self.adaptor is None:
            return 0
        return chunk_window(0, n_frames, self.stream.K, self.adaptor.config.max_frames).lag_frames

    def condition_time(self, request: ChunkRequest) -> float:
        """The time the chunk's own window gives its first code: its newest frame less the distance.

        Every position that window places is conditioned by the frame of this time + j / 50. The
        first positions of a streamed chunk were placed by the window before (`last_frame_times`),
        whose times differ from these by how far generation ran ahead of the camera or behind it.
        """
        return self._condition_time

    def load_adaptor(self, path: str | None) -> dict | None:
        """Load an adaptor checkpoint for this model (None removes it); the next chunk uses it."""
        self.set_adaptor(load_adaptor(path, self.musicgen) if path else None)
        return None if self.adaptor is None else self.adaptor.trained

    def state(self) -> SourceState:
        """MusicGen follows the steering tempo only once it has locked (only then is it in the prompt)."""
        tracker = self.steering.tempo if self.steering is not None else None
        locked = tracker is not None and tracker.locked
        return SourceState(tempo=float(tracker.bpm) if locked else 0.0, tempo_locked=locked,
                           steering_words=self.steering_words, prompt=self.prompt_used)

    def _condition_text(self, request: ChunkRequest):
        adaptor = self.adaptor
        prompt = request.params.prompt
        words: tuple[str, ...] = ()
        if adaptor is None and self.steer_prompt and self.steering is not None:
            prompt, words = self.steering.steer(prompt, request.window)
        self.steering_words = words
        if prompt != self._text_prompt:
            self.stream.set_text(self._encode(prompt))
            self._text_prompt = prompt
        self.prompt_used = prompt
        return adaptor

    def _encode(self, prompt: str) -> TextCondition:
        """T5 once per prompt among the last few: steering moves between a handful of prompts
        (mood words, tempo steps), and each T5 run delays the chunk it starts."""
        text = self._encoded.pop(prompt, None)
        if text is None:
            text = self.musicgen.encode_text([prompt])
            self.text_encodings += 1
        self._encoded[prompt] = text
        if len(self._encoded) > RECENT_PROMPTS:
            self._encoded.popitem(last=False)
        return text

    def _advance(self, adaptor, window: TimelineWindow, n_frames: int, params: GenerationParams) -> torch.Tensor:
        """The stream's next `n_frames` (1, K, n), conditioned on the adaptor's prefix over the newest
        frames of the window (when an adaptor is loaded), placed by the conditioning contract."""
        sampling = Sampling(cfg=params.cfg, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
        stream = self.stream
        buffers = stream.condition(adaptor)
        if buffers is None:
            self.last_frame_times = np.full(n_frames, window.t_end)
            self._condition_time = window.t_end
            return stream.advance(n_frames, sampling)
        if not stream.started:
            buffers.reset()
        self._slide_if_needed(n_frames)
        chunk = stream.next_window(n_frames, adaptor.config.max_frames)
        self._fill(buffers, window, chunk)
        self.last_frame_times = self._position_times[chunk.done:chunk.codes].copy()
        self._condition_time = window.t_end - (chunk.newest - chunk.done) / FRAME_RATE
        return stream.advance(n_frames, sampling, chunk)

    def _fill(self, buffers, window: TimelineWindow, chunk) -> None:
        """The adaptor's prefix for `chunk` from `window` (streamed: only the positions not yet held),
        and the time of the frame each position got: the window's newest less its distance in frames."""
        start = buffers.filled
        self.adaptor.fill(buffers, window, chunk)
        if buffers.filled == 0:          # recomputed as a whole: every position from this window
            start = chunk.first
        positions = np.arange(start, chunk.newest + 1)
        self._position_times[positions] = window.t_end - (chunk.newest - positions) / FRAME_RATE
        self._last_window = window

    def _slide_if_needed(self, n_frames: int) -> None:
        """Slide before a chunk that would not fit, prefilling the context under the prefix training gives
        its positions (from the last chunk's features, whose newest frame is the context's last position)."""
        stream, adaptor = self.stream, self.adaptor
        if not stream.started or stream.fits(n_frames):
            return
        if adaptor is None or self._last_window is None:
            stream.slide()
            return
        stream.prefix.reset()
        self._fill(stream.prefix, self._last_window, stream.layout.slide_window(n_frames, adaptor.config.max_frames))
        stream.slide(refilled=True)

    @torch.no_grad()
    def render(self, request: ChunkRequest) -> np.ndarray:
        adaptor = self._condition_text(request)
        n = request.n_frames
        new = self._advance(adaptor, request.window, n, request.params).cpu()   # (1, K, n)
        self.last_codes = new
        history = new if self._history is None else torch.cat([self._history, new], dim=-1)
        overlap_frames = -(-request.overlap_samples // self.hop)            # the overlap itself must be re-decoded
        before = min(max(self.decode_context_frames, overlap_frames), history.shape[-1] - n)
        started = time.perf_counter()
        audio = self.musicgen.decode_audio(history[:, :, -(before + n):])[0]   # ((before + n) * hop,)
        self.codec_seconds += time.perf_counter() - started
        self._history = history[:, :, -max(self.decode_context_frames, overlap_frames, 1):]
        wanted = request.overlap_samples + n * self.hop
        if len(audio) < wanted:                                # no earlier codes to render the overlap from
            audio = np.concatenate([np.zeros(wanted - len(audio), np.float32), audio])
        return np.ascontiguousarray(audio[-wanted:], dtype=np.float32)

    @torch.no_grad()
    def prepare_next(self, n_frames: int) -> None:
        """Slide the stream now if the next chunk would not fit its window, so no chunk's render pays for it."""
        self._slide_if_needed(n_frames)

    def warm_up(self, params: GenerationParams, window: TimelineWindow, chunk_frames: int) -> None:
        """Run every path once on throwaway frames (a start, a continuation, a slide, EnCodec; on CUDA the
        step's graphs are captured), then leave the stream fresh, so no chunk pays for cold caches.

        Then one chunk of `chunk_frames` is rendered warm, decoded as a chunk is: `warm_up_rtf` is what
        this machine sustains (audio seconds per second), known before the show starts."""
        request = ChunkRequest(index=0, start_frame=0, n_frames=2, overlap_samples=0, window=window, params=params)
        adaptor = self._condition_text(request)
        stream = self.stream
        self._advance(adaptor, window, 2, params)
        stream.restart(stream.recent_frames(1).repeat(1, 1, max(self.context_frames, 1)))   # as long as a slide's
        codes = self._advance(adaptor, window, 2, params)
        self.musicgen.decode_audio(codes.repeat(1, 1, max(self.decode_context_frames, 1)))
        n = min(chunk_frames, window.n_frames)
        started = time.perf_counter()
        codes = self._advance(adaptor, window, n, params)
        self.musicgen.decode_audio(torch.cat([codes[..., :1].repeat(1, 1, self.decode_context_frames), codes], -1))
        self.warm_up_rtf = n / FRAME_RATE / (time.perf_counter() - started)
        stream.prepare(stream.sampling)
        stream.reset()

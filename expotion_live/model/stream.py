"""One MusicGen generation that lasts a whole live session: the live engine's decoder state.

`MusicGen.generate` starts at the start token and closes the delay pattern at its end;
a live engine calling it per chunk re-prefills its recent codes every time. A
`GenerationStream` keeps one KV cache and one delayed token sequence for the session
instead, and each `advance(n)` decodes n more positions, continuing the delay pattern
where the last call left it:

    position:    0  1  2  3  4  5  6 ...      (K = 3 codebooks; a.., A.., x.. frames)
    codebook 0:  P  a  b  c  d  e  f ...      nothing is ever closed: after position p,
    codebook 1:  P  P  A  B  C  D  E ...      frames up to p - K are complete, and the
    codebook 2:  P  P  P  x  y  z  w ...      ones after wait for their finer codebooks

so a chunk of n frames costs n steps (the first after a start, n + K - 1). The cache
has `window` positions (MusicGen was trained on 30 s = 1500); when the next chunk
would not fit, the stream slides (`slide`): it prefills the most recent `context`
complete frames at position 0 and generation goes on from there (the incomplete
frames are drawn again). A prompt change rewrites only the text's cross-attention keys
and values (`set_text`); the adaptor's prefix lives in fixed buffers (`condition`:
`adaptor.PrefixBuffers`), filled for each chunk where the conditioning contract places
it (`conditioning.ChunkWindow`: `next_window` says where the next chunk's goes). The
window, its fits and slides are the contract's `StreamLayout`; nothing here re-derives them.

One step (`_step`) samples the next column from the last logits and decodes it, reading
and writing only tensors that stay in place (the sequence, the cache, the logits, a
position counter, the chunk's random numbers). Where the decoder's backend can be
captured (`cuda_graphs`: the torch backends on CUDA), `GraphSteps` captures it once per
attention bucket and replays it, so a step is one graph launch with no host
synchronisation; elsewhere (the CPU's numba kernels) `EagerSteps` calls it step by step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .adaptor import FusedPrefixAttention, PrefixBuffers
from .conditioning import ChunkWindow, StreamLayout, chunk_window
from .decoder import KVCache
from .delay_pattern import UNKNOWN, DelayPattern
from .sampling import fill_gumbel, guide, noise_width, sample_with_noise
from .text import TextCondition

TEXT_CAPACITY = 64       # text positions the cross-attention buffers hold; a longer prompt reallocates them
ATTEND_BUCKET = 128      # a step attends over the filled cache rounded up to this: on CUDA one graph per bucket


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen; a change takes effect at the next `advance`."""

    cfg: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    greedy: bool = False

    def shape_key(self, vocab_size: int) -> tuple:
        """What a captured step bakes in (the rest are tensors read at replay)."""
        return (self.greedy, self.top_k, self.top_p, noise_width(vocab_size, self.top_k, self.top_p))


class GenerationStream:
    """A session-long, KV-cached, classifier-free-guided generation (see module docstring). Batch 1."""

    def __init__(self, musicgen, window: int, context: int, seed: int | None = None, graphs: bool | None = None):
        decoder = musicgen.decoder
        config = decoder.config
        if window < config.num_codebooks + 2:
            raise ValueError(f"a stream window of {window} positions is too short")
        self.decoder = decoder
        self.device = musicgen.device
        self.K, self.vocab_size = config.num_codebooks, config.vocab_size
        self.window = window
        self.context = context           # frames a slide prefills
        self.layout = StreamLayout(window, context, self.K)
        self.slides = 0
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        # the CFG batch [conditional; null] always (guidance 1 gives the conditional logits; the null half still runs)
        self.cache: KVCache = decoder.allocate_cache(2, window, self.device)
        self.seq = torch.full((1, self.K, window), UNKNOWN, dtype=torch.long, device=self.device)  # (B, K, S)
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)  # the column sampled next
        self.logits = torch.zeros(2, self.K, self.vocab_size, dtype=torch.float32, device=self.device)
        self.cfg = torch.ones((), device=self.device)
        self.temperature = torch.ones((), device=self.device)
        self.noise = torch.zeros(0, device=self.device)        # (window, 1, K, width): each chunk's random numbers
        self.step_index = torch.zeros(1, dtype=torch.long, device=self.device)
        self.prefix: PrefixBuffers | None = None             # the adaptor's per-layer prefix, once one is set
        self.sampling = Sampling()
        self.next_position = 0           # host copy of `position`
        self.frames_done = 0             # complete frames since the last (re)start
        self.started = False
        self.text_version = 0            # bumps when the text buffers are reallocated
        use_graphs = decoder.backend.cuda_graphs if graphs is None else graphs
        if use_graphs and not decoder.backend.cuda_graphs:
            raise ValueError(f"the decoder's {decoder.backend.name!r} decode backend on {self.device} "
                             f"cannot be captured as CUDA graphs")
        self.steps = GraphSteps(self) if use_graphs else EagerSteps(self)

    # -- conditions --------------------------------------------------------------------------
    def set_text(self, text: TextCondition) -> None:
        """The prompt for every step from now on: only the cross-attention keys and values are rewritten."""
        before = None if self.cache.cross_k is None else self.cache.cross_k.data_ptr()
        self.decoder.write_text(self.cache, text.with_null().to(self.device), capacity=TEXT_CAPACITY)
        if self.cache.cross_k.data_ptr() != before:
            self.text_version += 1

    def condition(self, adaptor) -> PrefixBuffers | None:
        """The prefix buffers every step from now on reads, made once per adaptor (None: no adaptor).

        The caller fills them for each chunk (`ConditionAdaptor.fill`) where `next_window` says.
        """
        if adaptor is None:
            self.prefix = None
        elif self.prefix is None or not self.prefix.serves(adaptor, adaptor.config.max_frames):
            self.prefix = PrefixBuffers(adaptor, adaptor.config.max_frames)
        return self.prefix

    def next_window(self, n_frames: int, max_frames: int) -> ChunkWindow:
        """Where the condition window of the next `advance(n_frames)` sits (after the slide it will need)."""
        done = self.frames_done if self.started else 0
        if self.started and not self.layout.fits(done, n_frames):
            done = self.layout.slide()
        return chunk_window(done, n_frames, self.K, max_frames)

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def advance(self, n_frames: int, sampling: Sampling, window: ChunkWindow | None = None) -> torch.LongTensor:
        """The next `n_frames` complete frames (1, K, n), on the device.

        Starts the stream on its first call, and slides when the frames would not fit
        the window (unless `slide` was called ahead). With an adaptor (`condition`), `window`
        is this call's (`next_window(n_frames, ...)`), and the prefix buffers hold its prefix.
        """
        self.layout.check(n_frames)
        decoder = self.decoder
        if (decoder.positions_table.device != self.cache.self_k.device or decoder.dtype != self.cache.self_k.dtype
                or (decoder.backend.position_major and not self.cache.position_major)):
            raise RuntimeError(f"the decoder was moved or cast ({decoder.dtype} on {decoder.positions_table.device}, "
                               f"decode backend {decoder.backend.name!r}) after this stream allocated its cache: "
                               f"make a new GenerationStream")
        if self.started and not self.fits(n_frames):
            self.slide()
        start, done = (self.next_position, self.frames_done) if self.started else (1, 0)   # 1: after the start token
        steps = done + n_frames + self.K - start                 # frame t is complete at position t + K
        if (window is None) != (self.prefix is None):
            raise ValueError("an adaptor's chunk needs its ChunkWindow (next_window), and only such a chunk one")
        if window is not None and (window.done, window.n, window.newest) != (done, n_frames, start + steps - 1):
            raise ValueError(f"a condition window for {window.n} frames after {window.done} does not fit the "
                             f"stream's next chunk ({n_frames} after {done}): make it with next_window")
        if not self.started:
            self.restart()                                       # its prefill under this chunk's prefix
        self._set_sampling(sampling)
        fill_gumbel(self.noise[:steps], self.generator)
        self.step_index.zero_()
        self.steps.run(steps)
        self.next_position += steps
        first = self.frames_done
        self.frames_done += n_frames
        return self._frames(first, n_frames)

    def restart(self, prompt_codes: torch.Tensor | None = None) -> None:
        """Start over at position 0 from the start token and these frames (1, K, P).

        The same prefill as `MusicGen.generate` with these prompt codes, so what follows
        equals a fresh generation continuing them.
        """
        if self.cache.cross_k is None:
            raise RuntimeError("set_text before the stream starts")
        K = self.K
        P = 0 if prompt_codes is None else prompt_codes.shape[-1]
        seq = self.seq
        seq.fill_(UNKNOWN)
        for k in range(K):
            seq[:, k, :k + 1] = self.decoder.config.pad_token_id          # before frame 0 of codebook k
            if P:
                seq[:, k, k + 1:k + 1 + P] = prompt_codes[:, k].to(self.device)
        start = P + 1                                                    # start token + prompt frames
        prefix = seq[:, :, :start].expand(2, K, start)
        self.logits.copy_(self.decoder.prefill_codes(prefix, self.cache, self._layers()))
        self.position.fill_(start)
        self.next_position = start
        self.frames_done = P
        self.started = True

    def recent_frames(self, n: int) -> torch.LongTensor:
        """The last min(n, frames done) complete frames (1, K, n)."""
        n = min(n, self.frames_done)
        return self._frames(self.frames_done - n, n)

    def _frames(self, first: int, n: int) -> torch.LongTensor:
        index = DelayPattern(self.K, first + n, 0, device=self.device).position_index[:, first:]   # (K, n)
        return self.seq.gather(2, index[None])                                  # (1, K, n)

    def _layers(self) -> list[FusedPrefixAttention | None] | None:
        return None if self.prefix is None else self.prefix.layers

    def fits(self, n_frames: int) -> bool:
        """Whether `n_frames` more frames fit the window without a slide."""
        return self.layout.fits(self.frames_done, n_frames)

    @torch.no_grad()
    def slide(self, refilled: bool = False) -> None:
        """Restart from the last `context` complete frames: the window's oldest positions are dropped.

        Codes and prefix re-anchor together at position 0. `refilled`: the prefix buffers were
        filled for the new positions (`layout.slide_window`), so the context is prefilled under
        the prefix training gives them; else the last prefix moves back with the frames it conditioned.
        """
        context = self.recent_frames(self.context)
        shift = self.next_position - (context.shape[-1] + 1)
        if self.prefix is not None and not refilled:
            self.prefix.shift(-shift)
        self.restart(context)
        self.slides += 1

    def reset(self) -> None:
        """Forget the generation (the next `advance` starts afresh); the text, buffers and graphs stay."""
        self.started = False
        self.next_position = self.frames_done = self.slides = 0

    def prepare(self, sampling: Sampling) -> None:
        """Get every step of this sampling ready (on CUDA: capture its graphs) before the first chunk."""
        self._set_sampling(sampling)
        self.steps.prepare()

    def _set_sampling(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.cfg.fill_(max(sampling.cfg, 1.0))
        self.temperature.fill_(sampling.temperature)
        width = 1 if sampling.greedy else noise_width(self.vocab_size, sampling.top_k, sampling.top_p)
        if self.noise.shape[-1] != width:    # one buffer for a chunk of up to `window` steps, kept in place
            self.noise = torch.zeros(self.window, 1, self.K, width, device=self.device)

    def _step(self, attend_length: int) -> None:
        """Sample column `position` from the last logits, then decode it: every tensor stays in place."""
        s = self.sampling
        column = self.seq.index_select(2, self.position)                          # (1, K, 1)
        logits = guide(self.logits, self.cfg)                                      # (1, K, V)
        noise = self.noise.index_select(0, self.step_index)[0]                     # (1, K, width)
        picked = sample_with_noise(logits, noise, self.temperature, top_k=s.top_k, top_p=s.top_p,
                                   greedy=s.greedy)
        column = torch.where(column == UNKNOWN, picked[..., None], column)         # pads and prompt stay
        self.seq.index_copy_(2, self.position, column)
        self.logits.copy_(self.decoder.decode_step(column.expand(2, self.K, 1), self.position, self.cache,
                                                   self._layers(), attend_length=attend_length))
        self.position.add_(1)
        self.step_index.add_(1)

    def attend_length(self, position: int) -> int:
        """Cache positions a step at `position` attends over: 0..position rounded up to a bucket
        (the same for both backends, so they run the same attention and give the same tokens)."""
        return min(self.window, (position // ATTEND_BUCKET + 1) * ATTEND_BUCKET)


class EagerSteps:
    """Each step run as it comes (a backend that cannot be captured: the CPU's)."""

    def __init__(self, stream: GenerationStream):
        self.stream = stream

    def prepare(self) -> None:
        pass

    def run(self, steps: int) -> None:
        stream = self.stream
        for i in range(steps):
            stream._step(stream.attend_length(stream.next_position + i))


class GraphSteps:
    """`_step` captured as one CUDA graph per attention bucket and replayed (a backend with `cuda_graphs`).

    A graph bakes in the sampling's shapes (greedy, top-k, top-p), the adaptor's buffers,
    the text buffers and the decoder's backend (its weights' memory, rebuilt when the
    decoder is moved or cast); a change of any of these captures again, which a performer's
    edits seldom cause: the prompt's text, guidance, temperature and each chunk's prefix
    are rewritten in place. `prepare` captures every bucket ahead (the session's warm-up),
    so no capture lands in the middle of a chunk.
    """

    def __init__(self, stream: GenerationStream):
        self.stream = stream
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.key: tuple | None = None
        self.pool = None

    def _current_key(self) -> tuple:
        stream = self.stream
        return (stream.sampling.shape_key(stream.vocab_size), stream.text_version, id(stream.prefix),
                tuple(stream.noise.shape[1:]), stream.decoder.backend)   # the object: kept alive, compared by identity

    def prepare(self) -> None:
        """Capture a graph for every bucket of the window under the current key."""
        stream = self.stream
        for attend_length in sorted({stream.attend_length(p) for p in range(stream.window)}):
            self._graph(attend_length)

    def run(self, steps: int) -> None:
        stream = self.stream
        for i in range(steps):
            self._graph(stream.attend_length(stream.next_position + i)).replay()

    def _graph(self, attend_length: int) -> torch.cuda.CUDAGraph:
        key = self._current_key()
        if key != self.key:
            self.graphs.clear()
            self.key = key
        graph = self.graphs.get(attend_length)
        if graph is None:
            graph = self.graphs[attend_length] = self._capture(attend_length)
        return graph

    def _capture(self, attend_length: int) -> torch.cuda.CUDAGraph:
        """Capture one step. The warm-up runs write only the column at `position` of the sequence and
        the cache; both are put back (the cache's column is overwritten by the real step before it is read)."""
        stream = self.stream
        state = (stream.seq, stream.position, stream.logits, stream.step_index)
        saved = [t.clone() for t in state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):            # kernels chosen and workspaces allocated outside the capture
                stream._step(attend_length)
                for own, copy in zip(state, saved):
                    own.copy_(copy)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            stream._step(attend_length)
        self.pool = graph.pool()
        for own, copy in zip(state, saved):
            own.copy_(copy)
        return graph

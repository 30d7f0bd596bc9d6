"""The chunk scheduler: keeps the ring filled just ahead of the playhead with music from a source.

Two threads live here:
- the *scheduler thread* decides when the next chunk is due, builds its request (latest
  visual window, latest params), joins finished chunks into the ring with a crossfade,
  and stretches the music when generation falls behind;
- the *generator thread* (a one-worker executor) only runs `source.render`, which may
  take seconds on a CPU, and right after each chunk `source.prepare_next` (work the next
  chunk would start with, done while the ring is full); nothing waits on it but the
  scheduler thread.
Offline (`engine.offline`) neither runs: `render_chunk` does one chunk's plan, render and
join on the caller's thread.

How far ahead: the next chunk is requested when the buffered audio falls to the
*target lead*, which adapts to the measured render cost: the low-water mark plus 1.25 x
the slowest of the last few renders (per frame, scaled to the next chunk), at least
`min_lead_seconds`. A short lead keeps control latency low (a gesture waits for the
next request, up to one chunk, then about one lead) while leaving room to render.

Joins: each chunk after the first arrives with `overlap_samples` extra audio rendered
*before* its start frame. The last `overlap_samples` of every chunk are held back from
the ring; when the next chunk arrives, held tail and new overlap are crossfaded, so
every join is a 40 ms fade between two renderings of the same moment (equal-power,
corrected for how correlated the two sides are: `engine.crossfade`).

When generation is slower than real time (RTF < 1) the ring would run dry. Instead of
silence, the scheduler *stretches*: while the next chunk is still rendering and less
than `low_water_seconds` is buffered, it replays the end of the previous chunk (as long
as the render is still expected to take, between 0.1 s and `loop_seconds`), joined with
the same crossfade (no click, no gap, level unchanged). Nothing is stretched before
playback starts: the consumer waits for `low_water_seconds` in the ring (`BlockPlayer`).
When the chunk finally arrives it crossfades in as usual. `stretched_seconds` and
`stretching` report it, and the RTF in the status says why.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..features.schema import FRAME_RATE, TimelineWindow
from .crossfade import aligned_start, crossfade, equal_power_curves
from .source import ChunkRequest, GenerationParams, MusicSource
from .steering import conducted_beat

POLL_SECONDS = 0.005   # how often the scheduler looks at the ring while waiting
RECENT_RENDERS = 5     # renders remembered for the lead and the recent RTF
MARKS_KEPT = 1024      # chunk marks kept for benchmarks and tests (~8 min of 0.5 s chunks; a show runs for days)
MIN_STRETCH_SECONDS = 0.1   # shortest replayed stretch: long enough not to flutter
LOOP_SEARCH_SECONDS = 0.02  # loop points are searched this far back for a join in phase (one 50 Hz period)
MIN_WINDOW_FRAMES = 6 * FRAME_RATE   # windows span at least 6 s: tempo and mood readers need several beats


class SampleRing(Protocol):
    """What the scheduler needs of the ring buffer (audio.ring_buffer.RingBuffer)."""

    capacity: int
    write_index: int
    read_index: int
    last_read_time: float

    def available(self) -> int: ...
    def space(self) -> int: ...
    def write(self, samples: np.ndarray) -> int: ...


@dataclass
class ChunkMark:
    """Where a chunk starts in the ring and which visual moment conditioned it: its code frame j plays
    at `played_at + j / 50`, and each position its window placed (all but a streamed chunk's first K,
    placed by the chunk before) holds the frame of `t_condition + j / 50`."""

    index: int
    start_frame: int
    n_frames: int
    ring_pos: int          # ring write index of the chunk's first sample (the join: its crossfade start)
    first_frame_pos: int   # ring index where its first code frame sounds, after the crossfade into it
    t_condition: float     # timeline time (time.monotonic()) of the frame that conditioned its first new code
    render_seconds: float
    played_at: float = 0.0  # time.monotonic() its first code frame was read by the consumer, 0 = not yet


@dataclass(frozen=True)
class ChunkTiming:
    """Chunk, context and crossfade lengths, counted in 50 Hz frames and samples."""

    sample_rate: int
    chunk_frames: int
    first_chunk_frames: int
    context_frames: int
    overlap_samples: int

    @classmethod
    def from_settings(cls, generation, sample_rate: int) -> ChunkTiming:
        timing = cls(
            sample_rate=sample_rate,
            chunk_frames=round(generation.chunk_seconds * FRAME_RATE),
            first_chunk_frames=round(generation.first_chunk_seconds * FRAME_RATE),
            context_frames=round(generation.context_seconds * FRAME_RATE),
            overlap_samples=round(generation.crossfade_ms * sample_rate / 1000),
        )
        if timing.chunk_frames < 1 or timing.first_chunk_frames < 1:
            raise ValueError("generation.chunk_seconds and first_chunk_seconds must be at least 0.02 s")
        if timing.overlap_samples < 1 or timing.overlap_samples > timing.samples(
                min(timing.chunk_frames, timing.first_chunk_frames)) // 2:
            raise ValueError("generation.crossfade_ms must be positive and at most half a chunk")
        return timing

    def samples(self, frames: int) -> int:
        return frames * self.sample_rate // FRAME_RATE

    def frames_of(self, index: int) -> int:
        """Frames of new audio chunk `index` is planned with (live, a conductor may move its end to a beat)."""
        return self.first_chunk_frames if index == 0 else self.chunk_frames


def frames_to_a_beat(window: TimelineWindow, n_frames: int, plays_at: float) -> int:
    """A chunk length near `n_frames` that ends on a beat of the window's conductor (hands or a Link session).

    The next chunk then starts on a beat, so what changes at a chunk boundary (a new prompt, a
    new tempo) changes on the beat. Lengths stay within half to twice `n_frames`; without a
    conductor, or with no beat in that range, `n_frames` as it is.
    """
    conducted = conducted_beat(window)
    if conducted is None:
        return n_frames
    bpm, beats = conducted
    frames_per_beat = FRAME_RATE * 60.0 / bpm
    start = beats + (plays_at - window.t_end) / 60.0 * bpm            # the conductor's beat when it is heard
    last_beat = int(start + 2 * n_frames / frames_per_beat)
    ends = [round((beat - start) * frames_per_beat) for beat in range(int(np.ceil(start)), last_beat + 1)]
    fitting = [n for n in ends if n_frames // 2 <= n <= 2 * n_frames]
    return min(fitting, key=lambda n: abs(n - n_frames), default=n_frames)


class ChunkScheduler:
    """Feeds `ring` from `source`; `window_fn(n_frames)` returns the latest visual window."""

    def __init__(self, source: MusicSource, ring: SampleRing, window_fn: Callable[[int], TimelineWindow],
                 params: GenerationParams, timing: ChunkTiming, *, realtime: bool = True,
                 min_lead_seconds: float = 0.2, low_water_seconds: float = 0.08, loop_seconds: float = 0.5,
                 on_chunk: Callable[[int, int], None] | None = None):
        if not 0 < low_water_seconds < min_lead_seconds:
            raise ValueError(f"need 0 < low_water_seconds ({low_water_seconds}) < min_lead_seconds "
                             f"({min_lead_seconds}): a chunk is requested above the low-water mark")
        if source.sample_rate != timing.sample_rate:
            raise ValueError(f"source renders at {source.sample_rate} Hz but the ring runs at {timing.sample_rate} Hz")
        self.source = source
        self.ring = ring
        self.window_fn = window_fn
        self.timing = timing
        self.realtime = realtime      # False: an offline consumer waits for us, so never stretch
        self.min_lead = round(min_lead_seconds * timing.sample_rate)
        self.low_water = round(low_water_seconds * timing.sample_rate)
        self.loop_samples = round(loop_seconds * timing.sample_rate)
        self.on_chunk = on_chunk
        self._params = params
        self._curves = equal_power_curves(timing.overlap_samples)
        self._tail: np.ndarray | None = None       # held-back end of the last chunk (overlap_samples)
        self._last_chunk: np.ndarray | None = None  # the last chunk as joined, for stretching
        self.marks: deque[ChunkMark] = deque(maxlen=MARKS_KEPT)   # the most recent chunks
        self._unplayed: list[ChunkMark] = []
        self.chunks_done = 0
        self.playing_chunk = -1
        self.frames_generated = 0
        self.render_seconds_total = 0.0
        self._recent_costs: list[float] = []         # render seconds per frame, last RECENT_RENDERS chunks
        self.rtf = 0.0                               # recent audio seconds / render seconds
        self.stretched_seconds = 0.0
        self.stretching = False                      # the last wait for a chunk needed stretching
        self.control_latency = 0.0                   # last measured: the frame at a chunk's first code -> it played
        self.control_latencies: deque[float] = deque(maxlen=MARKS_KEPT)   # every chunk's, most recent last
        self.error: BaseException | None = None
        self._ahead = None                            # the future of the last prepare_next
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator")
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    # -- control (any thread) ---------------------------------------------------------------
    def set_params(self, params: GenerationParams) -> None:
        """Latest wins; used by the next chunk request."""
        self._params = params

    @property
    def params(self) -> GenerationParams:
        return self._params

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop feeding; waits for the chunk being rendered (the model cannot be interrupted)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def sustained_rtf(self) -> float:
        """Seconds of audio produced per second spent producing it, since start."""
        if self.render_seconds_total == 0:
            return 0.0
        return self.frames_generated / FRAME_RATE / self.render_seconds_total

    def target_lead(self) -> int:
        """Samples to keep buffered when requesting the next chunk: enough to cover its render."""
        render = self._expected_render_seconds(self.timing.chunk_frames)       # seconds, pessimistic
        lead = self.low_water + round(1.25 * render * self.timing.sample_rate)
        return min(max(self.min_lead, lead), self.ring.capacity // 2)

    # -- offline (the calling thread; engine.offline) ---------------------------------------
    def render_chunk(self) -> ChunkRequest:
        """Request, render and join the next chunk on the calling thread, then prepare the one after.

        The same plan and join as the scheduler thread, with no clock and no stretching: an
        offline render (`realtime=False`) goes as fast as the source renders.
        """
        if self.realtime:
            raise RuntimeError("render_chunk is for offline schedulers (realtime=False)")
        request = self._next_request()
        started = time.monotonic()
        audio = self._checked(request, self.source.render(request))
        self._join(request, audio, time.monotonic() - started)
        self.source.prepare_next(self.timing.chunk_frames)
        return request

    def write_tail(self) -> None:
        """Write the held-back end of the last chunk: offline, no chunk follows to crossfade with it."""
        if self._tail is not None:
            self._write_all(self._tail)
            self._tail = None

    # -- scheduler thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wait_until(lambda: self.ring.available() <= self.target_lead())
                if self._stop.is_set():
                    return
                request = self._next_request()
                started = time.monotonic()
                audio = self._render(request)
                if audio is None:
                    return
                render_seconds = time.monotonic() - started
                self._join(request, audio, render_seconds)
                self._ahead = self._executor.submit(self.source.prepare_next, self.timing.chunk_frames)
        except BaseException as err:   # reported in the status; the session keeps the file intact
            self.error = err

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready() and not self._stop.is_set():
            self._track_playhead()
            time.sleep(POLL_SECONDS)

    def _next_request(self) -> ChunkRequest:
        index = self.chunks_done
        n_frames = self.timing.frames_of(index)
        window = self.window_fn(max(self.timing.context_frames + n_frames, MIN_WINDOW_FRAMES))
        plays_at = None
        if self.realtime:   # after what is buffered and the held-back tail it will be crossfaded with
            held = 0 if self._tail is None else len(self._tail)
            plays_at = time.monotonic() + (self.ring.available() + held) / self.timing.sample_rate
            n_frames = frames_to_a_beat(window, n_frames, plays_at)
        return ChunkRequest(index=index, start_frame=self.frames_generated, n_frames=n_frames,
                            overlap_samples=0 if index == 0 else self.timing.overlap_samples,
                            window=window, params=self._params, plays_at=plays_at)

    def _render(self, request: ChunkRequest) -> np.ndarray | None:
        """Render on the generator thread; stretch the music meanwhile if the ring runs low."""
        future = self._executor.submit(self.source.render, request)
        started = time.monotonic()
        expected = self._expected_render_seconds(request.n_frames)
        self.stretching = False
        while True:
            try:
                audio = future.result(timeout=POLL_SECONDS)
                break
            except FutureTimeout:
                if self._stop.is_set():
                    return None
                self._track_playhead()
                playing = self.ring.read_index > 0
                if self.realtime and playing and self._tail is not None and self.ring.available() < self.low_water:
                    remaining = expected - (time.monotonic() - started)
                    self._stretch(round(remaining * self.timing.sample_rate) + self.low_water)
        if self._ahead is not None:
            self._ahead.result()      # ran before the render (one worker): raises what it raised
        return self._checked(request, audio)

    def _checked(self, request: ChunkRequest, audio) -> np.ndarray:
        expected = request.overlap_samples + self.timing.samples(request.n_frames)
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape != (expected,):
            raise ValueError(f"{type(self.source).__name__} returned audio of shape {audio.shape} "
                             f"for chunk {request.index}; expected ({expected},)")
        if not np.isfinite(audio).all():    # NaN would reach the speakers and the recording
            raise ValueError(f"{type(self.source).__name__} returned NaN or infinite samples for chunk {request.index}")
        return audio

    def _expected_render_seconds(self, n_frames: int) -> float:
        """How long the next render should take, from the slowest recent one (0 before any)."""
        return max(self._recent_costs, default=0.0) * n_frames

    def _stretch(self, wanted: int) -> None:
        """Replay the end of the previous chunk, crossfaded in: time bought, no gap.

        The replayed stretch covers the render time still expected (`wanted` samples), at
        least `MIN_STRETCH_SECONDS` and at most `loop_samples`: a short hiccup costs a
        short repeat, not a whole loop of extra latency for the next chunk.
        """
        overlap = self.timing.overlap_samples
        shortest = round(MIN_STRETCH_SECONDS * self.timing.sample_rate)
        length = min(max(wanted, shortest), self.loop_samples, len(self._last_chunk) - overlap)
        latest = len(self._last_chunk) - (length + overlap)
        start = aligned_start(self._last_chunk, self._tail, latest, round(LOOP_SEARCH_SECONDS * self.timing.sample_rate))
        segment = self._last_chunk[start:start + length + overlap]   # its first `overlap` samples meet the tail
        self._tail = self._write_joined(crossfade(self._tail, segment[:overlap], self._curves), segment[overlap:])
        self.stretched_seconds += length / self.timing.sample_rate
        self.stretching = True

    def _join(self, request: ChunkRequest, audio: np.ndarray, render_seconds: float) -> None:
        overlap = request.overlap_samples
        enter = 0
        if self._tail is None:
            head = audio[:0]
        else:
            if self.stretching:    # the tail is looped audio: enter the new chunk where it is in phase with it
                # no further than leaves the next held tail in the chunk (a chunk of one frame has little to skip)
                search = min(round(LOOP_SEARCH_SECONDS * self.timing.sample_rate), len(audio) - 2 * overlap)
                enter = aligned_start(audio[:search + overlap], self._tail, search, search)
            head = crossfade(self._tail, audio[enter:enter + overlap], self._curves)
        ring_pos = self.ring.write_index
        body = audio[enter + overlap:]
        self._last_chunk = np.concatenate([head, body])
        self._tail = self._write_joined(head, body)
        # the rendered audio's sample `overlap` is the chunk's first frame; it entered at sample `enter`
        mark = ChunkMark(request.index, request.start_frame, request.n_frames, ring_pos, ring_pos + overlap - enter,
                         self.source.condition_time(request), render_seconds)
        self.marks.append(mark)
        self._unplayed.append(mark)
        self.chunks_done += 1
        self.frames_generated += request.n_frames
        self.render_seconds_total += render_seconds
        self._recent_costs = [*self._recent_costs[1 - RECENT_RENDERS:], render_seconds / request.n_frames]
        self.rtf = 1.0 / (FRAME_RATE * max(sum(self._recent_costs) / len(self._recent_costs), 1e-9))

    def _write_joined(self, head: np.ndarray, body: np.ndarray) -> np.ndarray:
        """Write head + body except the last `overlap_samples`, which are returned as the new tail."""
        keep = self.timing.overlap_samples
        self._write_all(head)
        self._write_all(body[:-keep])
        return body[-keep:].copy()

    def _write_all(self, samples: np.ndarray) -> None:
        done = 0
        while done < len(samples) and not self._stop.is_set():
            done += self.ring.write(samples[done:])
            if done < len(samples):
                self._wait_until(lambda: self.ring.space() > 0)

    def _track_playhead(self) -> None:
        """Stamp chunks whose first code frame the consumer has read; notify chunk listeners."""
        read_index = self.ring.read_index
        while self._unplayed and self._unplayed[0].first_frame_pos < read_index:
            mark = self._unplayed.pop(0)
            mark.played_at = self.ring.last_read_time - (read_index - mark.first_frame_pos) / self.timing.sample_rate
            if mark.t_condition > 0:
                self.control_latency = mark.played_at - mark.t_condition
                self.control_latencies.append(self.control_latency)
            self.playing_chunk = mark.index
            if self.on_chunk is not None:
                self.on_chunk(mark.index, mark.start_frame)

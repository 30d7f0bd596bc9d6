"""The chunk scheduler against real test sources: joins, lead, params, and the slow-source stretch.

`ToneSource` is a real MusicSource: a sine whose phase follows absolute sample time, so
its overlap region is exactly the previous chunk's tail and any discontinuity at a join
is the scheduler's fault. `SlowToneSource` sleeps to run slower than real time on purpose.
"""
import time

import numpy as np
import pytest

from expotion_live.audio.dsp import DspPath
from expotion_live.audio.output import BlockPlayer, FileSink, WavRecorder
from expotion_live.audio.ring_buffer import RingBuffer
from expotion_live.engine.crossfade import aligned_start, crossfade, equal_power_curves
from expotion_live.engine.scheduler import ChunkScheduler, ChunkTiming
from expotion_live.engine.source import ChunkRequest, GenerationParams
from expotion_live.features.schema import FRAME_RATE
from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
from expotion_live.settings import GenerationSettings

SR = 32000
BLOCK = 512
PARAMS = GenerationParams(prompt="tone", cfg=3.0, temperature=1.0, top_k=250, top_p=0.0)


class ToneSource:
    """A sine at a frequency set by the prompt's length; the phase follows absolute sample time."""

    sample_rate = SR

    def __init__(self, freq=220.0):
        self.freq = freq
        self.requests: list[ChunkRequest] = []
        self.prepared = None            # n_frames of the last prepare_next

    def render(self, request: ChunkRequest) -> np.ndarray:
        self.requests.append(request)
        start = request.start_frame * SR // FRAME_RATE - request.overlap_samples
        n = request.overlap_samples + request.n_frames * SR // FRAME_RATE
        return (0.5 * np.sin(2 * np.pi * self.freq * (start + np.arange(n)) / SR)).astype(np.float32)

    def prepare_next(self, n_frames):
        self.prepared = n_frames

    def condition_lag_frames(self, n_frames):
        return 0

    def condition_time(self, request):
        return request.window.t_end


class SlowToneSource(ToneSource):
    """Renders at a fixed real-time factor by sleeping: a model too slow for real time."""

    def __init__(self, rtf, freq=220.0):
        super().__init__(freq)
        self.rtf = rtf

    def render(self, request):
        time.sleep(request.n_frames / FRAME_RATE / self.rtf)
        return super().render(request)


def blank_window(n_frames, t_end=None):
    return TimelineWindow(
        t_end=time.monotonic() if t_end is None else t_end,
        face=np.zeros((n_frames, FACE_DIM), np.float32),
        motion=np.zeros((n_frames, MOTION_DIM), np.float32),
        flow=np.zeros((n_frames, *FLOW_SHAPE), np.float32))


def timing(chunk=0.5, first=0.25, crossfade_ms=40.0):
    generation = GenerationSettings(chunk_seconds=chunk, first_chunk_seconds=first, context_seconds=1.0,
                                    crossfade_ms=crossfade_ms)
    return ChunkTiming.from_settings(generation, SR)


def run_offline(source, seconds, chunk_timing, **kw):
    """Scheduler into an offline file sink; return the scheduler and every played sample."""
    ring = RingBuffer(4 * SR)
    player = BlockPlayer(ring, DspPath(SR, BLOCK))
    blocks = []
    scheduler = ChunkScheduler(source, ring, blank_window, PARAMS, chunk_timing, realtime=False, **kw)
    sink = FileSink(player, SR, BLOCK, realtime=False, duration=seconds)
    tap = _ListTap(blocks)
    player.tap = tap
    scheduler.start()
    sink.start()
    assert sink.finished.wait(30)
    sink.stop()
    scheduler.stop()
    return scheduler, np.concatenate(blocks)


class _ListTap:
    """Keeps copies of played blocks in memory (the test's ears)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def push(self, block):
        self.blocks.append(block.copy())


def join_jumps(signal, positions, radius=64):
    """Largest sample-to-sample step near the joins, and elsewhere."""
    step = np.abs(np.diff(signal))
    near = np.zeros_like(step, dtype=bool)
    for p in positions:
        near[max(p - radius, 0):p + radius] = True
    return step[near].max(), step[~near].max()


def test_equal_power_curves_keep_power_constant():
    fade_out, fade_in = equal_power_curves(1280)
    np.testing.assert_allclose(fade_out ** 2 + fade_in ** 2, 1.0, atol=1e-6)
    assert fade_out[0] > 0.99 and fade_in[-1] > 0.99


def test_crossfade_keeps_power_for_correlated_and_uncorrelated_sides():
    rng = np.random.default_rng(0)
    curves = equal_power_curves(4000)
    a, b = rng.standard_normal((2, 4000)).astype(np.float32)
    np.testing.assert_allclose(crossfade(a, a, curves), a, atol=1e-5)     # same signal: no +3 dB swell
    mixed = crossfade(a, b, curves)
    middle = mixed[1500:2500]
    assert np.mean(middle ** 2) == pytest.approx(1.0, rel=0.15)          # independent: power stays 1


def test_loop_point_is_chosen_in_phase_so_the_join_never_cancels():
    """An out-of-phase loop join cancels to silence mid-crossfade; the aligned one keeps its level."""
    t = np.arange(SR, dtype=np.float64) / SR
    audio = np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    overlap = 1280
    tail = audio[-overlap:]
    latest = len(audio) - 8000 - overlap
    curves = equal_power_curves(overlap)
    anti = latest + next(d for d in range(200) if np.dot(audio[latest + d:latest + d + overlap], tail) < -0.9 * overlap / 2)
    gap = np.abs(crossfade(tail, audio[anti:anti + overlap], curves)).reshape(-1, 160).max(axis=1)
    assert gap.min() < 0.5                                        # the dip (-8 dB and worse) this avoids
    start = aligned_start(audio, tail, latest, round(0.02 * SR))
    joined = crossfade(tail, audio[start:start + overlap], curves)
    assert latest - round(0.02 * SR) <= start <= latest
    assert np.abs(joined).reshape(-1, 160).max(axis=1).min() > 0.95


def test_chunks_join_without_discontinuity_and_cover_the_timeline():
    source = ToneSource()
    scheduler, played = run_offline(source, 2.0, timing())
    assert len(played) == round(2.0 * SR / BLOCK) * BLOCK
    starts = [r.start_frame for r in source.requests]
    frames = [r.n_frames for r in source.requests]
    assert starts == list(np.cumsum([0] + frames[:-1]))         # contiguous, no frame skipped
    assert frames[0] == 12 and set(frames[1:]) == {25}           # short first chunk, then chunk_seconds
    assert source.requests[0].overlap_samples == 0 and source.requests[1].overlap_samples == 1280
    expected = 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(len(played)) / SR)
    np.testing.assert_allclose(played, expected, atol=1e-5)      # identical overlaps: the fade is invisible
    joins = [m.ring_pos for m in list(scheduler.marks)[1:] if m.ring_pos < len(played)]
    at_joins, elsewhere = join_jumps(played, joins)
    assert at_joins <= 1.05 * elsewhere


def test_params_change_takes_effect_at_the_next_chunk():
    source = ToneSource()
    ring = RingBuffer(4 * SR)
    scheduler = ChunkScheduler(source, ring, blank_window, PARAMS, timing(), realtime=False)

    def consume_until(n_requests):
        deadline = time.monotonic() + 10
        while len(source.requests) < n_requests and time.monotonic() < deadline:
            ring.read_index = ring.write_index                   # the test is the consumer: play everything
            time.sleep(0.01)

    scheduler.start()
    try:
        consume_until(2)
        new = GenerationParams(prompt="brighter", cfg=5.0, temperature=0.7, top_k=50, top_p=0.9)
        scheduler.set_params(new)
        seen = len(source.requests)
        consume_until(seen + 2)
    finally:
        scheduler.stop()
    assert all(r.params == PARAMS for r in source.requests[:seen])
    assert all(r.params == new for r in source.requests[seen + 1:])   # at the latest, the chunk after the change
    assert len(source.requests) >= seen + 2


def test_source_error_is_reported_not_raised():
    class Broken(ToneSource):
        def render(self, request):
            return np.zeros(3, np.float32)

    ring = RingBuffer(SR)
    scheduler = ChunkScheduler(Broken(), ring, blank_window, PARAMS, timing(), realtime=False)
    scheduler.start()
    deadline = time.monotonic() + 5
    while scheduler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not scheduler.running                                 # the scheduler stopped itself
    assert isinstance(scheduler.error, ValueError) and "expected (7680,)" in str(scheduler.error)
    scheduler.stop()


def test_slow_source_stretches_instead_of_falling_silent(tmp_path):
    """RTF 0.5: the ring would run dry half the time; the scheduler loops the last chunk instead."""
    source = SlowToneSource(rtf=0.5)
    ring = RingBuffer(4 * SR)
    player = BlockPlayer(ring, DspPath(SR, BLOCK))
    recorder = WavRecorder(tmp_path / "slow.wav", SR)
    player.tap = recorder
    scheduler = ChunkScheduler(source, ring, blank_window, PARAMS, timing(chunk=0.4, first=0.2),
                               realtime=True, loop_seconds=0.3)
    sink = FileSink(player, SR, BLOCK, realtime=True, duration=3.0)
    scheduler.start()
    sink.start()
    assert sink.finished.wait(10)
    sink.stop()
    scheduler.stop()
    recorder.close()
    import soundfile as sf
    played, sr = sf.read(tmp_path / "slow.wav", dtype="float32")
    assert sr == SR and len(played) == round(3.0 * SR / BLOCK) * BLOCK
    assert scheduler.stretched_seconds > 0.5                     # about half of the time was stretched
    assert scheduler.sustained_rtf == pytest.approx(0.5, rel=0.2)
    first = int(np.argmax(np.abs(played) > 1e-4))
    sounding = played[first:]
    assert ring.underrun_samples == 0                            # never ran dry after the first sound
    usable = len(sounding) // 160 * 160
    envelope = np.abs(sounding[:usable]).reshape(-1, 160).max(axis=1)   # (windows, 5 ms)
    assert envelope[2:].min() > 0.2                               # no silent gap (fades dip, never vanish)
    step = np.abs(np.diff(sounding))
    assert step.max() < 3 * 2 * np.pi * 220.0 / SR * 0.5         # no click: steps stay near a sine's slope


def test_one_frame_chunks_behind_real_time_stretch_and_keep_playing(tmp_path):
    """Chunks of one 20 ms frame (frame-wise control) from a source at RTF 0.5: every join, looped or not,
    leaves the next held tail in the chunk, so the music keeps playing without a gap."""
    source = SlowToneSource(rtf=0.5)
    ring = RingBuffer(SR)
    player = BlockPlayer(ring, DspPath(SR, BLOCK))
    scheduler = ChunkScheduler(source, ring, blank_window, PARAMS, timing(chunk=0.02, first=0.02, crossfade_ms=10.0),
                               realtime=True, min_lead_seconds=0.06, low_water_seconds=0.03, loop_seconds=0.1)
    sink = FileSink(player, SR, BLOCK, realtime=True, duration=1.5)
    scheduler.start()
    sink.start()
    assert sink.finished.wait(10)
    sink.stop()
    scheduler.stop()
    assert scheduler.error is None, scheduler.error
    assert scheduler.stretched_seconds > 0.1 and scheduler.chunks_done > 20


def test_the_next_chunk_is_prepared_right_after_each_chunk():
    source = ToneSource()
    ring = RingBuffer(SR)
    scheduler = ChunkScheduler(source, ring, blank_window, PARAMS, timing(), realtime=False)
    scheduler.start()
    deadline = time.monotonic() + 5
    while scheduler.chunks_done < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.stop()
    assert source.prepared == scheduler.timing.chunk_frames


def test_a_live_request_says_when_its_chunk_will_be_heard():
    source = ToneSource()
    ring = RingBuffer(SR)
    scheduler = ChunkScheduler(source, ring, blank_window, PARAMS, timing(), realtime=True)
    before = time.monotonic()
    request = scheduler._next_request()
    assert request.plays_at is not None and request.plays_at >= before    # after what is buffered (none yet)
    offline = ChunkScheduler(source, RingBuffer(SR), blank_window, PARAMS, timing(), realtime=False)
    assert offline._next_request().plays_at is None                       # offline: the window's own end


def test_with_a_conductor_each_chunk_ends_on_its_beat():
    from expotion_live.features.schema import CONDUCT_NAMES

    def conducted(n_frames):       # a conductor at 90 BPM, counting beats on the monotonic clock
        window = blank_window(n_frames)
        window.conduct[-1, CONDUCT_NAMES.index("conducting")] = 1.0
        window.conduct[-1, CONDUCT_NAMES.index("bpm")] = 90.0
        window.conduct[-1, CONDUCT_NAMES.index("beats")] = window.t_end * 90.0 / 60.0
        return window

    source = ToneSource()
    scheduler = ChunkScheduler(source, RingBuffer(SR), conducted, PARAMS, timing(chunk=0.5, first=0.5), realtime=True)
    for _ in range(3):
        request = scheduler._next_request()
        start = request.plays_at * 90.0 / 60.0                            # the beat the chunk is heard on
        end = start + request.n_frames / FRAME_RATE * 90.0 / 60.0
        assert abs(end - round(end)) <= 0.5 / FRAME_RATE * 90.0 / 60.0    # ends on a beat, to the frame
        assert 12 <= request.n_frames <= 50
    plain = ChunkScheduler(source, RingBuffer(SR), blank_window, PARAMS, timing(chunk=0.5, first=0.5), realtime=True)
    assert plain._next_request().n_frames == 25                          # no conductor: the set length

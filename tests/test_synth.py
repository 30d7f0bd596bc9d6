"""The gesture synth, measured from its output: tempo, loudness, mode, brightness, seamless chunks."""
from __future__ import annotations

import time

import librosa
import numpy as np
import pytest

from expotion_live.engine import offline
from expotion_live.engine.crossfade import crossfade, equal_power_curves
from expotion_live.engine.scheduler import ChunkTiming
from expotion_live.engine.source import ChunkRequest, GenerationParams
from expotion_live.engine.synth import SynthSource, synthetic_performance
from expotion_live.features.schema import EXPRESSION_NAMES, FRAME_RATE, GEOMETRY_DIM, TimelineWindow
from expotion_live.settings import GenerationSettings

SR = 32000
PARAMS = GenerationParams(prompt="", cfg=1.0, temperature=1.0, top_k=0, top_p=0.0)
TIMING = ChunkTiming.from_settings(GenerationSettings(), SR)      # the live app's chunks, context and crossfade
A, C_SHARP, C = 9, 1, 0            # pitch classes: the synth's default key is A (major third C#, minor third C)


def joined(*parts: TimelineWindow) -> TimelineWindow:
    return TimelineWindow(t_end=sum(p.t_end for p in parts),
                          face=np.concatenate([p.face for p in parts]),
                          motion=np.concatenate([p.motion for p in parts]),
                          flow=np.concatenate([p.flow for p in parts]))


def rendered(timeline: TimelineWindow, source: SynthSource | None = None, on_chunk=None) -> np.ndarray:
    """The whole timeline played by the synth through the engine's offline renderer, as a video is."""
    source = SynthSource(SR) if source is None else source
    return offline.render(source, timeline, PARAMS, TIMING, timeline.n_frames, on_chunk)


def measured_tempo(audio: np.ndarray) -> float:
    """librosa's tempo of the audio's low band (kick and bass onsets), flat prior over 30-300 BPM.

    The low band keeps the measurement on the beat level: with hats and arpeggio in,
    onset autocorrelation often locks to the eighth notes (double tempo).
    """
    import scipy.stats

    hop = 128
    envelope = librosa.onset.onset_strength(y=audio, sr=SR, hop_length=hop, fmax=150, n_mels=12)
    return float(librosa.feature.tempo(onset_envelope=envelope, sr=SR, hop_length=hop,
                                       prior=scipy.stats.uniform(30, 270))[0])


@pytest.mark.parametrize("bpm", [62, 100, 150, 178])
def test_follows_the_tempo_of_the_motion(bpm):
    audio = rendered(synthetic_performance(10.0, bpm, level=0.5, seed=bpm))
    measured = measured_tempo(audio[4 * SR:])          # after the first windows long enough to hold a beat
    print(f"commanded {bpm} BPM, librosa measured {measured:.1f} BPM")
    assert abs(measured - bpm) <= 3.0


def test_tempo_changes_when_the_motion_changes():
    source = SynthSource(SR)
    timeline = joined(synthetic_performance(8.0, 90, 0.5, seed=1), synthetic_performance(8.0, 130, 0.5, seed=2))
    bpm_from = {}                        # start frame of each chunk -> the tempo it played at
    audio = rendered(timeline, source, lambda request: bpm_from.__setitem__(request.start_frame, source.controls.bpm))
    assert abs(bpm_from[7 * FRAME_RATE] - 90) <= 2
    assert abs(source.controls.bpm - 130) <= 2
    assert abs(measured_tempo(audio[11 * SR:]) - 130) <= 3.0


def test_loudness_rises_with_motion_energy():
    rms = [float(np.sqrt(np.mean(rendered(synthetic_performance(8.0, 110, level, seed=3))[3 * SR:] ** 2)))
           for level in (0.05, 0.4, 0.9)]
    db = 20 * np.log10(rms)
    print("RMS dBFS at motion level 0.05 / 0.4 / 0.9:", np.round(db, 1))
    assert db[1] > db[0] + 3 and db[2] > db[1] + 3


def chroma_of(audio: np.ndarray) -> np.ndarray:
    return librosa.feature.chroma_stft(y=audio, sr=SR, n_fft=8192, hop_length=2048).mean(axis=1)


def test_mode_follows_the_smile():
    smiling = chroma_of(rendered(synthetic_performance(12.0, 100, 0.3, smile=0.8, seed=4)))
    frowning = chroma_of(rendered(synthetic_performance(12.0, 100, 0.3, smile=-0.8, seed=4)))
    print("chroma C / C# smiling:", smiling[[C, C_SHARP]].round(3), "frowning:", frowning[[C, C_SHARP]].round(3))
    assert smiling[C_SHARP] > 1.5 * smiling[C]          # A major: the major third C#
    assert frowning[C] > 1.5 * frowning[C_SHARP]        # A minor: the minor third C
    assert smiling[A] > smiling.mean() and frowning[A] > frowning.mean()


def test_brightness_follows_an_open_expressive_face():
    calm = synthetic_performance(8.0, 100, 0.3, seed=5)
    face = calm.face.copy()
    for name in ("mouth_height", "brow_left", "brow_right"):
        face[:, GEOMETRY_DIM + EXPRESSION_NAMES.index(name)] = 1.0
    open_face = TimelineWindow(calm.t_end, face, calm.motion, calm.flow)
    centroid = [float(librosa.feature.spectral_centroid(y=rendered(w)[3 * SR:], sr=SR).mean())
                for w in (calm, open_face)]
    print("spectral centroid Hz, calm / open face:", np.round(centroid))
    assert centroid[1] > 1.15 * centroid[0]


def requests_with_changing_controls() -> list[ChunkRequest]:
    """Seven 0.7 s chunks whose windows jump in tempo, energy and smile between chunks."""
    out = []
    for index in range(7):
        window = synthetic_performance(4.0, bpm=80 + 15 * index, level=(index % 3) / 2, smile=(-1) ** index * 0.8,
                                       seed=index)
        out.append(ChunkRequest(index, start_frame=35 * index, n_frames=35, overlap_samples=1280,
                                window=window, params=PARAMS))
    return out


def test_lead_in_repeats_the_previous_tail_and_joins_are_seamless():
    source = SynthSource(SR, seed=7)
    chunks = [source.render(request) for request in requests_with_changing_controls()]
    overlap = 1280
    curves = equal_power_curves(overlap)
    for previous, chunk in zip(chunks, chunks[1:]):
        np.testing.assert_array_equal(chunk[:overlap], previous[-overlap:])
        # The scheduler's correlation-aware crossfade then leaves the music untouched (no +3 dB swell).
        np.testing.assert_allclose(crossfade(previous[-overlap:], chunk[:overlap], curves),
                                   previous[-overlap:], atol=1e-5)
    audio = np.concatenate([chunks[0]] + [chunk[overlap:] for chunk in chunks[1:]])
    step = np.abs(np.diff(audio))
    joins = [len(chunks[0]) + k * 35 * 640 - 1 for k in range(6)]
    assert step[joins].max() <= np.percentile(step, 99.9)      # a join looks like any other sample


def test_every_note_starts_and_ends_silent():
    source = SynthSource(SR, seed=2)
    for request in requests_with_changing_controls()[:3]:
        source.render(request)
    notes = source._notes
    assert len(notes) > 20
    for note in notes:
        peak = np.abs(note.audio).max()
        assert abs(note.audio[0]) <= 0.01 * peak and note.audio[-1] == 0.0


def test_deterministic_for_a_seed_and_restartable():
    requests = requests_with_changing_controls()[:3]
    first = [SynthSource(SR, seed=1).render(r) for r in requests[:1]]
    source = SynthSource(SR, seed=1)
    run = [source.render(r) for r in requests]
    again = SynthSource(SR, seed=1)
    np.testing.assert_array_equal(np.concatenate(run), np.concatenate([again.render(r) for r in requests]))
    np.testing.assert_array_equal(source.render(requests[0]), first[0])      # a restart starts a fresh clock
    other = SynthSource(SR, seed=2).render(requests[0])
    assert not np.array_equal(other, first[0])


def test_output_is_the_requested_length_and_in_range():
    source = SynthSource(SR)
    still = synthetic_performance(0.5, 100, 0.0)
    empty = TimelineWindow(0.0, still.face[:0], still.motion[:0], still.flow[:0])
    for index, window in enumerate((empty, still, synthetic_performance(4.0, 170, 1.0))):
        audio = source.render(ChunkRequest(index, 25 * index, 25, 640, window, PARAMS))
        assert audio.dtype == np.float32 and audio.shape == (640 + 25 * 640,)
        assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
    assert np.abs(audio).max() > 0.05


def test_bad_requests_are_clear_errors():
    source = SynthSource(SR)
    window = synthetic_performance(1.0, 100, 0.5)
    with pytest.raises(ValueError, match="bad chunk request"):
        source.render(ChunkRequest(0, 0, 0, 640, window, PARAMS))
    with pytest.raises(ValueError, match="multiple of 50"):
        SynthSource(44111)


def test_plays_from_the_tracked_demo_video(face_video):
    """Real MediaPipe tracking of the bundled face video drives it: the sway is louder than the still start."""
    from expotion_live.testing.face_video import segment
    from expotion_live.features.offline import extract_video
    from expotion_live.settings import TrackingSettings

    timeline = extract_video(face_video, TrackingSettings())
    audio = rendered(timeline)
    seconds = timeline.n_frames / FRAME_RATE
    assert len(audio) == timeline.n_frames * SR // FRAME_RATE and np.all(np.isfinite(audio))

    def rms_db(name: str) -> float:
        start, end = segment(name, seconds)
        part = audio[int((start + 1.0) * SR):int(end * SR)]     # skip the first second: the window catches up
        return 20 * np.log10(np.sqrt(np.mean(part ** 2)))

    print(f"demo video: neutral {rms_db('neutral'):.1f} dBFS, sway {rms_db('sway'):.1f} dBFS")
    assert rms_db("sway") > rms_db("neutral") + 6


def test_plays_seamlessly_through_the_live_scheduler():
    """Through the real ChunkScheduler and RingBuffer, the joined audio is the synth's own music, sample for sample."""
    from expotion_live.audio.ring_buffer import RingBuffer
    from expotion_live.engine.scheduler import ChunkScheduler, ChunkTiming
    from expotion_live.settings import GenerationSettings

    performer = synthetic_performance(6.0, 120, 0.7, smile=0.5, seed=9)

    def latest(n_frames: int) -> TimelineWindow:
        n = min(n_frames, performer.n_frames)
        return TimelineWindow(performer.t_end, performer.face[-n:], performer.motion[-n:], performer.flow[-n:])

    timing = ChunkTiming.from_settings(GenerationSettings(chunk_seconds=0.5, first_chunk_seconds=0.25,
                                                          context_seconds=4.0, crossfade_ms=40.0), SR)
    ring = RingBuffer(8 * SR)
    scheduler = ChunkScheduler(SynthSource(SR, seed=3), ring, latest, PARAMS, timing, realtime=False)
    played = np.zeros(3 * SR, np.float32)
    scheduler.start()
    deadline = time.monotonic() + 30
    try:
        done = 0
        while done < len(played):
            assert scheduler.error is None and time.monotonic() < deadline, scheduler.error
            ready = min(4096, ring.available(), len(played) - done)
            if ready == 0:
                time.sleep(0.001)
            done += ring.read_into(played[done:done + ready])
    finally:
        scheduler.stop()

    reference, expected, start = SynthSource(SR, seed=3), [], 0
    for index in range(8):
        n_frames = timing.first_chunk_frames if index == 0 else timing.chunk_frames
        overlap = 0 if index == 0 else timing.overlap_samples
        window = latest(timing.context_frames + n_frames)
        expected.append(reference.render(ChunkRequest(index, start, n_frames, overlap, window, PARAMS))[overlap:])
        start += n_frames
    np.testing.assert_allclose(played, np.concatenate(expected)[:len(played)], atol=1e-5)

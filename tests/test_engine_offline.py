"""The live engine run offline over a real tracked video longer than one adaptor window (tiny random MusicGen)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from expotion_live.engine import offline
from expotion_live.engine.musicgen_source import MusicGenSource
from expotion_live.engine.scheduler import ChunkTiming
from expotion_live.engine.source import GenerationParams
from expotion_live.features.schema import TimelineWindow
from expotion_live.model.generate import MusicGen
from expotion_live.settings import Settings

GENERATION = dataclasses.replace(Settings().generation, prompt="calm piano", seed=5)
HOP = 640


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> TimelineWindow:
    """12 s of the demo face, tracked as `prepare` and `generate` track it: past a 512-frame (10.24 s) window."""
    from expotion_live.testing.face_video import make_face_video
    from expotion_live.features.offline import extract_video

    video = make_face_video(tmp_path_factory.mktemp("offline") / "take.mp4", seconds=12.0, fps=10.0)
    window = extract_video(video, Settings().tracking)
    assert window.n_frames == 596 and window.face[:, 0].std() > 0   # 11.9 s of a face that moves
    return window


@pytest.fixture(scope="module")
def model(tiny_musicgen_dir):
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor

    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(max_frames=512), musicgen.decoder).eval()
    with torch.no_grad():
        adaptor.gates.fill_(1.0)      # an untrained adaptor (gates 0) would leave the music unchanged
    return musicgen, adaptor


def render(model, features: TimelineWindow, n_frames: int | None = None) -> np.ndarray:
    musicgen, adaptor = model
    source = MusicGenSource.from_settings(musicgen, adaptor, None, GENERATION)
    timing = ChunkTiming.from_settings(GENERATION, musicgen.sample_rate)
    return offline.render(source, features, GenerationParams.from_settings(GENERATION), timing,
                          features.n_frames if n_frames is None else n_frames)


def changed_from(features: TimelineWindow, frame: int) -> TimelineWindow:
    """The same video with every frame from `frame` on replaced by another moment's face and motion."""
    face, motion, flow = features.face.copy(), features.motion.copy(), features.flow.copy()
    for array in (face, motion, flow):
        array[frame:] = array[frame:][::-1] * 2.0 + 0.5
    return TimelineWindow(features.t_end, face, motion, flow, features.conduct)


def test_a_video_renders_its_length_and_the_same_for_a_seed(model, features):
    audio = render(model, features)
    assert audio.dtype == np.float32 and audio.shape == (596 * HOP,)
    assert np.abs(audio[-HOP * 50:]).max() > 0                    # music to the last second, no silent tail
    np.testing.assert_array_equal(audio, render(model, features))
    assert render(model, features, 30).shape == (30 * HOP,)        # shorter than the first chunk + its held tail


def test_late_frames_steer_late_music_only(model, features):
    """Frames changed from 11.2 s on (past the adaptor's 10.24 s window) change the music there, and
    nothing before the chunk that first sees them (less its crossfade)."""
    changed = 560
    timing = ChunkTiming.from_settings(GENERATION, 32000)
    first_seeing = changed // timing.chunk_frames * timing.chunk_frames    # 0.5 s chunks: the one holding 560
    plain, steered = render(model, features), render(model, changed_from(features, changed))
    untouched = first_seeing * HOP - timing.overlap_samples
    np.testing.assert_array_equal(plain[:untouched], steered[:untouched])
    assert not np.array_equal(plain[changed * HOP:], steered[changed * HOP:])


def test_windows_hold_the_video_edges(features):
    first = offline.video_window(features, 25, 300)
    assert first.n_frames == 300 and first.t_end == pytest.approx(24 / 50)
    np.testing.assert_array_equal(first.face[-25:], features.face[:25])
    np.testing.assert_array_equal(first.face[:-25], np.repeat(features.face[:1], 275, axis=0))
    late = offline.video_window(features, 600, 300)                # 4 frames past the video's end
    np.testing.assert_array_equal(late.face[:296], features.face[300:596])
    np.testing.assert_array_equal(late.face[296:], np.repeat(features.face[-1:], 4, axis=0))


def test_each_chunks_prefix_is_the_contracts_window_over_the_video_frames_of_its_positions(model, features):
    """Every chunk's prefix is the conditioning contract's window of that chunk (as training cuts it), and its
    newest frame is the video's frame of the newest position: frame p of the stream at position p."""
    from expotion_live.model.conditioning import StreamLayout

    musicgen, adaptor = model
    seen = []

    class Recording:      # the real adaptor; records each chunk's window and the video frame at its newest position
        config = adaptor.config
        trained = adaptor.trained

        def fill(self, buffers, window_features, window):
            seen.append((window, round(window_features.t_end * 50)))
            return adaptor.fill(buffers, window_features, window)

        def __getattr__(self, name):     # buffers are made from the real adaptor's shapes and gates
            return getattr(adaptor, name)

    timing = ChunkTiming.from_settings(GENERATION, musicgen.sample_rate)
    source = MusicGenSource.from_settings(musicgen, Recording(), None, GENERATION)
    offline.render(source, features, GenerationParams.from_settings(GENERATION), timing, 596)
    chunks = [(w, f) for w, f in seen if w.newest > w.done]     # not a slide's prefill (up to the context)
    assert len(chunks) >= 24 and source.stream.slides == 1    # 12 s of 0.5 s chunks, a slide among them
    lengths = [timing.first_chunk_frames] + [timing.chunk_frames] * (len(chunks) - 1)
    layout = StreamLayout(source.stream.window, timing.context_frames, 4)
    assert [w for w, _ in chunks] == list(layout.windows(lengths, adaptor.config.max_frames))
    generated = 0
    for window, video_frame in chunks:
        origin = generated - window.done              # the video frame at the stream's position 0
        assert video_frame == origin + window.newest
        generated += window.n


def test_the_synth_renders_through_the_same_path_each_chunk_from_the_frame_of_its_first_sample():
    """The synth follows the window's newest frame from its first sample (condition lag 0), so offline each
    chunk's window ends at the video frame where its new audio starts; the joins leave its music as it made it."""
    from expotion_live.engine.synth import SynthSource, synthetic_performance

    performer = synthetic_performance(6.0, bpm=120, level=0.7, smile=0.5, seed=9)
    timing = ChunkTiming.from_settings(GENERATION, 32000)
    requests = []
    audio = offline.render(SynthSource(32000, seed=3), performer, GenerationParams.from_settings(GENERATION), timing,
                           performer.n_frames, requests.append)
    assert audio.shape == (performer.n_frames * HOP,) and np.abs(audio).max() > 0.05
    assert [round(r.window.t_end * 50) for r in requests] == [r.start_frame for r in requests]
    assert all(r.window.n_frames >= timing.context_frames + r.n_frames for r in requests)
    again = SynthSource(32000, seed=3)       # the same requests, chunk by chunk: the synth's own music
    own = np.concatenate([again.render(r)[r.overlap_samples:] for r in requests])
    np.testing.assert_allclose(audio, own[:len(audio)], atol=1e-5)

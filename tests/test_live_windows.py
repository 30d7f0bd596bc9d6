"""Training on the windows the live engine uses: the conditioning contract's windows are the stream's own,
and training takes them.

Oracle: the real `MusicGenSource` (tiny random MusicGen, an adaptor) rendering chunks
through a slide, with its prefix buffers read after each chunk, against
`conditioning.session_windows` from the same settings. Then a tiny training run on them.
"""
import numpy as np
import pytest
import torch

from expotion_live.engine.scheduler import ChunkTiming
from expotion_live.engine.source import ChunkRequest, GenerationParams
from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
from expotion_live.model.adaptor import AdaptorConfig, AdaptorError, ConditionAdaptor
from expotion_live.model.conditioning import StreamLayout, chunk_window, session_windows
from expotion_live.settings import GenerationSettings
from expotion_live.train.dataset import DatasetError, Segment, cut

K = 4
SMALL = dict(flow_channels=(8,), flow_dim=16)
# 5-frame first chunk, 10-frame chunks, 20 frames of context, a 50-position stream window
GENERATION = GenerationSettings(first_chunk_seconds=0.1, chunk_seconds=0.2, context_seconds=0.4,
                                window_seconds=1.0, crossfade_ms=20)


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")


def random_window(n_frames: int, seed: int = 0) -> TimelineWindow:
    rng = np.random.default_rng(seed)
    return TimelineWindow(t_end=n_frames / 50, face=rng.normal(size=(n_frames, FACE_DIM)).astype(np.float32),
                          motion=rng.normal(size=(n_frames, MOTION_DIM)).astype(np.float32),
                          flow=rng.normal(size=(n_frames, *FLOW_SHAPE)).astype(np.float32))


def nominal_windows(timing, max_frames, conducted=False):
    return session_windows(StreamLayout(round(GENERATION.window_seconds * 50), timing.context_frames, K),
                           timing.first_chunk_frames, timing.chunk_frames, max_frames, conducted=conducted)


def test_session_windows_are_the_windows_the_live_stream_loads(musicgen):
    from expotion_live.engine.musicgen_source import MusicGenSource

    timing = ChunkTiming.from_settings(GENERATION, musicgen.sample_rate)
    adaptor = ConditionAdaptor(AdaptorConfig(max_frames=50, **SMALL), musicgen.decoder)
    source = MusicGenSource(musicgen, adaptor, context_frames=timing.context_frames,
                            window_frames=round(GENERATION.window_seconds * 50), seed=0)
    params = GenerationParams.from_settings(GENERATION)
    windows = nominal_windows(timing, adaptor.config.max_frames)
    assert [w.codes for w in windows] == [5, 15, 25, 35, 45, 30, 40]      # a slide to 20 frames after 45
    assert [(w.first, w.frames) for w in windows[:4]] == [(0, 9), (0, 19), (0, 29), (0, 39)]   # from position 0

    seen = []
    for index in range(len(windows) + 2):         # through the cycle and into its repeat
        n = timing.first_chunk_frames if index == 0 else timing.chunk_frames
        request = ChunkRequest(index=index, start_frame=0, n_frames=n, overlap_samples=0,
                               window=random_window(60, seed=index), params=params)
        source.render(request)
        buffer = source.stream.prefix.layers[-1]
        seen.append((source.stream.frames_done, int(buffer.last) + 1, int(buffer.first)))
        source.prepare_next(timing.chunk_frames)
    cycle = windows[5:]                            # after the first slide the stream repeats these
    assert seen[:-1] == [(w.codes, w.frames, w.first) for w in windows + cycle][:len(seen) - 1]


def test_a_conductors_chunk_lengths_are_all_trained():
    timing = ChunkTiming.from_settings(GENERATION, 32000)
    windows = nominal_windows(timing, 50, conducted=True)
    assert set(range(timing.chunk_frames // 2, 2 * timing.chunk_frames + 1)) <= {w.n for w in windows}
    assert all(w.first >= 0 and w.newest == w.codes + K - 1 for w in windows)


def test_a_window_is_cut_from_a_piece_with_its_video_where_the_stream_puts_it():
    window = chunk_window(done=20, n=10, K=K, max_frames=64)      # after a slide
    assert (window.first, window.frames, window.newest) == (0, 34, 33)
    piece = cut(window, Segment(clip=2, start=100, length=60))
    assert (piece.clip, piece.start, piece.length, piece.first) == (2, 100, 30, 0)
    assert piece.window == slice(100, 134)        # the frame at position p is the clip's frame start + p
    with pytest.raises(DatasetError, match="does not fit a piece of 20"):
        cut(window, Segment(0, 0, 20))
    assert Segment(0, 7, 30).window == slice(7, 37)             # the paper's: aligned with the codes


def test_training_takes_one_live_window_per_batch_with_the_video_where_live_puts_it(musicgen, tmp_path):
    from expotion_live.train.dataset import load_clip, write_clip
    from expotion_live.train.trainer import TrainConfig, Trainer, TrainingError

    rng = np.random.default_rng(0)
    clips = []
    for i in range(4):
        window = random_window(130, seed=10 + i)
        codes = rng.integers(0, 2048, (K, 130))
        write_clip(tmp_path / "cache", f"clip{i}", window, codes, caption="", source_stamp={})
        clips.append(load_clip(tmp_path / "cache", f"clip{i}"))
    config = TrainConfig(epochs=1, batch_size=2, segment_seconds=1.2, warmup_epochs=0.5)
    adaptor_config = AdaptorConfig(max_frames=50, **SMALL)
    trainer = Trainer(musicgen, clips[:3], clips[3:], tmp_path / "run", config, adaptor_config,
                      progress=False, log=lambda message: None, generation=GENERATION)
    timing = ChunkTiming.from_settings(GENERATION, musicgen.sample_rate)
    assert trainer.windows == nominal_windows(timing, 50, conducted=True)

    for batch_segments in trainer._epoch_order(0):
        window = next(w for w in trainer.windows if w.codes == batch_segments[0].length
                      and w.first == batch_segments[0].first and w.frames == batch_segments[0].frames)
        batch = trainer._batch(clips[:3], batch_segments)
        assert batch.first == window.first and batch.codes.shape == (2, K, window.codes)
        seg = batch_segments[0]
        # The window's frame at decoder position p is the clip's frame at the code position p (start + p).
        p = window.first + 3
        assert torch.equal(batch.face[0, 3], torch.from_numpy(np.array(clips[seg.clip].face[seg.start + p])))
    result = trainer.run()
    assert result.epochs_done == 1 and np.isfinite(result.val_losses[0])
    assert trainer.adaptor.trained["windows"] == "live"
    assert trainer.adaptor.trained["generation"]["chunk_seconds"] == GENERATION.chunk_seconds

    with pytest.raises(TrainingError, match="raise --segment-seconds to 1, or train the paper's way"):
        Trainer(musicgen, clips[:3], clips[3:], tmp_path / "short", TrainConfig(batch_size=2, segment_seconds=0.9),
                adaptor_config, progress=False, log=lambda message: None, generation=GENERATION)


def test_a_stream_window_beyond_the_adaptors_positions_is_refused(musicgen):
    """Positions are the adaptor's rows (the conditioning contract): a 30 s stream cannot be conditioned
    by an adaptor of 512 positions, and says which setting to change."""
    from expotion_live.engine.musicgen_source import MusicGenSource

    adaptor = ConditionAdaptor(AdaptorConfig(**SMALL), musicgen.decoder)      # max_frames 512
    with pytest.raises(AdaptorError, match="set generation.window_seconds to at most 10.24"):
        MusicGenSource(musicgen, adaptor, context_frames=200, window_frames=1500)
    assert MusicGenSource(musicgen, adaptor, context_frames=200, window_frames=500).adaptor is adaptor

"""Training on the window shapes the live engine uses: the shapes are the stream's own, and training takes them.

Oracle: the real `MusicGenSource` (tiny random MusicGen, an adaptor) rendering chunks
through a slide, with its prefix buffers read after each chunk, against `live_shapes`
from the same settings. Then a tiny training run on live-shaped windows.
"""
import numpy as np
import pytest
import torch

from expotion_live.engine.scheduler import ChunkTiming
from expotion_live.engine.source import ChunkRequest, GenerationParams
from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor
from expotion_live.settings import GenerationSettings
from expotion_live.train.dataset import DatasetError, Segment, WindowShape, live_shapes

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


def test_live_shapes_are_the_windows_the_live_stream_loads(musicgen):
    from expotion_live.engine.musicgen_source import MusicGenSource

    timing = ChunkTiming.from_settings(GENERATION, musicgen.sample_rate)
    adaptor = ConditionAdaptor(AdaptorConfig(max_frames=24, **SMALL), musicgen.decoder)   # caps context + chunk
    source = MusicGenSource(musicgen, adaptor, context_frames=timing.context_frames,
                            window_frames=round(GENERATION.window_seconds * 50), seed=0)
    params = GenerationParams.from_settings(GENERATION)
    shapes = live_shapes(timing, round(GENERATION.window_seconds * 50), K, adaptor.config.max_frames)
    assert [s.codes for s in shapes] == [5, 15, 25, 35, 45, 30, 40]      # a slide to 20 frames after 45

    seen = []
    for index in range(len(shapes) + 2):          # through the cycle and into its repeat
        n = timing.first_chunk_frames if index == 0 else timing.chunk_frames
        request = ChunkRequest(index=index, start_frame=0, n_frames=n, overlap_samples=0,
                               window=random_window(60, seed=index), params=params)
        source.render(request)
        buffer = source.stream.adapters[-1]
        seen.append(WindowShape(codes=source.stream.frames_done, frames=int(buffer.last) + 1,
                                first=int(buffer.first)))
        source.prepare_next(timing.chunk_frames)
    cycle = shapes[5:]                            # after the first slide the stream repeats these
    assert seen == shapes + cycle


def test_a_shape_is_cut_from_a_piece_with_its_video_where_the_stream_puts_it():
    old_window = WindowShape(codes=5, frames=24, first=-15)    # the first chunk: video from before the stream
    cut = old_window.place(Segment(clip=2, start=100, length=60), K)
    assert (cut.clip, cut.start, cut.length, cut.first) == (2, 115, 5, -15)
    assert cut.window == slice(100, 124)          # ends K frames after the codes: the newest meets position 5 + K - 1
    with pytest.raises(DatasetError, match="does not fit a piece of 20"):
        old_window.place(Segment(0, 0, 20), K)
    assert Segment(0, 7, 30).window == slice(7, 37)             # the paper's: aligned with the codes


def test_training_takes_one_live_shape_per_batch_with_the_video_where_live_puts_it(musicgen, tmp_path):
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
    adaptor_config = AdaptorConfig(max_frames=24, **SMALL)
    trainer = Trainer(musicgen, clips[:3], clips[3:], tmp_path / "run", config, adaptor_config,
                      progress=False, log=lambda message: None, generation=GENERATION)
    assert trainer.shapes == live_shapes(ChunkTiming.from_settings(GENERATION, musicgen.sample_rate), 50, K, 24)

    for batch_segments in trainer._epoch_order(0):
        shape = next(s for s in trainer.shapes if s.codes == batch_segments[0].length
                     and s.first == batch_segments[0].first)
        for seg in batch_segments:
            assert (seg.length, seg.first, seg.frames) == (shape.codes, shape.first, shape.frames)
        batch = trainer._batch(clips[:3], batch_segments)
        assert batch.first == shape.first and batch.codes.shape == (2, K, shape.codes)
        seg = batch_segments[0]
        # The window's frame at decoder position p is the clip's frame at the code position p (start + p).
        p = shape.first + 3
        assert torch.equal(batch.face[0, 3], torch.from_numpy(np.array(clips[seg.clip].face[seg.start + p])))
    result = trainer.run()
    assert result.epochs_done == 1 and np.isfinite(result.val_losses[0])

    with pytest.raises(TrainingError, match="raise --segment-seconds to 0.98, or train the paper's way"):
        Trainer(musicgen, clips[:3], clips[3:], tmp_path / "short", TrainConfig(batch_size=2, segment_seconds=0.9),
                adaptor_config, progress=False, log=lambda message: None, generation=GENERATION)


def test_a_30_s_context_conditions_the_chunk_with_the_newest_frames_at_the_newest_positions(musicgen):
    """Context + chunk (1525 frames) beyond the adaptor's 512: its newest 512 frames end at the chunk's last position.

    The live path (`MusicGenSource._advance`: `window_adapters(newest=True)` into the stream after 30 s of
    context) against a straight generation continuing the same context, its prefix placed by hand.
    """
    from expotion_live.model.stream import GenerationStream, Sampling

    context, n = 1500, 25
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(**SMALL), musicgen.decoder)      # max_frames 512
    with torch.no_grad():
        adaptor.gates.fill_(4.0)
    window = random_window(context + n + 40)      # the timeline holds more than context + chunk
    text = musicgen.encode_text(["warm pads"])
    prompt = torch.randint(0, 2048, (1, K, context), generator=torch.Generator().manual_seed(1))

    stream = GenerationStream(musicgen, window=context + n + K + 1, context=context, seed=0)
    stream.set_text(text)
    stream.restart(prompt)                        # where a slide leaves a stream with 30 s of context
    hooks = adaptor.window_adapters(window, context + n, newest=True)
    with torch.no_grad():
        live = stream.advance(n, Sampling(cfg=3.0, greedy=True), hooks, adaptor.config.max_frames)

    def straight(first):
        newest = [torch.from_numpy(np.array(x[-512:], dtype=np.float32))[None]
                  for x in (window.face, window.motion, window.flow)]
        with torch.no_grad():
            placed = adaptor.adapters(*newest, first=first)
            # The stream prefilled the context before any prefix was loaded: no prefix term up to position `context`.
            after_context = [None if h is None else (lambda q, p, h=h: h(q, p) * (p > context).to(q.dtype)[:, None])
                             for h in placed]
            return musicgen.generate(text, n + K, prompt_codes=prompt, cfg=3.0, greedy=True,
                                     adapters=after_context)[..., :n]

    last = context + n + K - 1                    # the chunk's last position: its last frame's last codebook
    expected = straight(first=last - 512 + 1)
    torch.testing.assert_close(live, expected, rtol=0, atol=0)
    assert not torch.equal(expected, straight(first=0))        # where the frames sit matters: the test can fail

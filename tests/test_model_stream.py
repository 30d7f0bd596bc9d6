"""The streamed generation against straight `MusicGen.generate` (greedy, fp32, tiny random MusicGen).

Oracles: chunks of a stream = one generation of the same length (with an adaptor too,
each chunk's prefix where the stream puts it); after a slide = a fresh generation
continuing the re-prefilled context; a prompt change rewrites the text alone; the
Gumbel sampler draws from the same distribution as `sample`. The CUDA-graph backend is
checked against the eager one where a GPU is present.
"""
import numpy as np
import pytest
import torch

from expotion_live.model.sampling import fill_gumbel, filter_logits, sample_with_noise
from expotion_live.model.stream import GenerationStream, Sampling

GREEDY = Sampling(cfg=3.0, greedy=True)
K = 4


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, precision="fp32")


def gated_adaptor(decoder, n_frames):
    """A random adaptor whose gates are open (it changes the music) and random features of n frames."""
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor

    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(max_frames=64), decoder)
    with torch.no_grad():
        adaptor.gates.fill_(4.0)
    cfg = adaptor.config
    features = [torch.randn(1, n_frames, cfg.face_dim), torch.randn(1, n_frames, cfg.motion_dim),
                torch.randn(1, n_frames, *cfg.flow_shape)]
    return adaptor, features


def straight(musicgen, text, n_frames, prompt=None, adapters=None):
    """generate() of n frames, with K more so that none of the n sees the pattern's closing pads."""
    return musicgen.generate(text, n_frames + K, prompt_codes=prompt, cfg=3.0, greedy=True,
                             adapters=adapters)[:, :, :n_frames]


def test_chunks_of_a_stream_equal_one_straight_generation(musicgen):
    text = musicgen.encode_text(["warm pads"])
    stream = GenerationStream(musicgen, window=120, context=20, seed=0)
    stream.set_text(text)
    chunks = [stream.advance(n, GREEDY) for n in (5, 12, 1, 20)]
    assert [c.shape for c in chunks] == [(1, K, n) for n in (5, 12, 1, 20)]
    torch.testing.assert_close(torch.cat(chunks, dim=-1), straight(musicgen, text, 38), rtol=0, atol=0)
    assert stream.slides == 0 and stream.next_position == 38 + K


def test_after_a_slide_the_stream_continues_like_a_fresh_generation_of_its_context(musicgen):
    text = musicgen.encode_text(["dark drums"])
    stream = GenerationStream(musicgen, window=40, context=12, seed=0)
    stream.set_text(text)
    before = torch.cat([stream.advance(10, GREEDY) for _ in range(3)], dim=-1)    # 30 frames + K positions
    assert stream.slides == 0
    after = stream.advance(10, GREEDY)                                          # 44 > 40: slides first
    assert stream.slides == 1 and stream.next_position == 12 + 1 + 10 + K - 1
    torch.testing.assert_close(after, straight(musicgen, text, 10, prompt=before[:, :, -12:]), rtol=0, atol=0)


def chunk_prefix(adaptor, features, window):
    """The prefix over the frames of the window's positions (features indexed by position)."""
    return adaptor.adapters(*(f[:, window.first:window.newest + 1] for f in features), first=window.first)


def advance_with(stream, adaptor, features, n):
    """One chunk with the window's prefix recomputed and loaded where the contract puts it."""
    window = stream.next_window(n, adaptor.config.max_frames)
    prefix = chunk_prefix(adaptor, features, window)
    stream.condition(adaptor).load(prefix, window.first)
    return window, prefix, stream.advance(n, GREEDY, window)


def test_the_adaptor_prefix_of_each_chunk_meets_the_positions_the_contract_gives(musicgen):
    """Each chunk's window conditions exactly that chunk's positions, newest frame at its last one."""
    adaptor, features = gated_adaptor(musicgen.decoder, 40)
    text = musicgen.encode_text(["warm pads"])
    stream = GenerationStream(musicgen, window=120, context=8, seed=0)
    stream.set_text(text)
    sizes, windows, prefixes, chunks = (6, 9, 7), [], [], []
    with torch.no_grad():
        for n in sizes:
            window, prefix, codes = advance_with(stream, adaptor, features, n)
            windows.append(window), prefixes.append(prefix), chunks.append(codes)
    # the rule spelled out: newest = done + n + K - 1, the window from position 0 up to it
    assert [(w.first, w.frames, w.newest) for w in windows] == [(0, 10, 9), (0, 19, 18), (0, 26, 25)]
    last = [w.newest for w in windows]

    def by_position(layer):
        def adapter(q, positions):
            c = min(int(np.searchsorted(last, int(positions[0]))), len(last) - 1)   # the chunk decoding it
            return prefixes[c][layer](q, positions)
        return adapter

    expected = straight(musicgen, text, sum(sizes), adapters=[by_position(i) for i in range(len(prefixes[0]))])
    torch.testing.assert_close(torch.cat(chunks, dim=-1), expected, rtol=0, atol=0)
    assert not torch.equal(expected, straight(musicgen, text, sum(sizes)))   # the adaptor did change the music


def test_a_window_made_for_another_chunk_is_refused(musicgen):
    adaptor, features = gated_adaptor(musicgen.decoder, 40)
    stream = GenerationStream(musicgen, window=120, context=8, seed=0)
    stream.set_text(musicgen.encode_text(["warm pads"]))
    window = stream.next_window(6, adaptor.config.max_frames)
    stream.condition(adaptor).load(chunk_prefix(adaptor, features, window), window.first)
    with torch.no_grad(), pytest.raises(ValueError, match="make it with next_window"):
        stream.advance(7, GREEDY, window)
    with torch.no_grad(), pytest.raises(ValueError, match="needs its ChunkWindow"):
        stream.advance(6, GREEDY)


def test_a_prompt_change_rewrites_only_the_texts_keys_and_values(musicgen):
    stream = GenerationStream(musicgen, window=60, context=10, seed=0)
    stream.set_text(musicgen.encode_text(["warm pads"]))
    stream.advance(8, GREEDY)
    self_k, self_v = stream.cache.self_k.clone(), stream.cache.self_v.clone()
    buffer = stream.cache.cross_k.data_ptr()
    new = musicgen.encode_text(["dark drums and a bright lead"]).with_null()
    stream.set_text(musicgen.encode_text(["dark drums and a bright lead"]))
    assert torch.equal(stream.cache.self_k, self_k) and torch.equal(stream.cache.self_v, self_v)
    assert stream.cache.cross_k.data_ptr() == buffer      # written in place: a captured step keeps reading it
    S = new.hidden.shape[1]
    expected = torch.stack([k for k, _, _ in musicgen.decoder.cross_keys_values(new)])
    torch.testing.assert_close(stream.cache.cross_k[:, :, :, :S], expected)
    assert (stream.cache.cross_bias[0, 0, 0, S:] == torch.finfo(torch.float32).min).all()
    assert stream.advance(4, GREEDY).shape == (1, K, 4)


def test_an_int8_stream_matches_int8_generate(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, precision="int8")
    text = musicgen.encode_text(["warm pads"])
    stream = GenerationStream(musicgen, window=60, context=10, seed=0)
    stream.set_text(text)
    chunks = torch.cat([stream.advance(n, GREEDY) for n in (4, 9)], dim=-1)
    torch.testing.assert_close(chunks, straight(musicgen, text, 13), rtol=0, atol=0)


def test_a_chunk_that_cannot_fit_the_window_is_refused(musicgen):
    stream = GenerationStream(musicgen, window=30, context=10, seed=0)
    stream.set_text(musicgen.encode_text(["warm pads"]))
    with pytest.raises(ValueError, match="do not fit a stream window of 30"):
        stream.advance(20, GREEDY)


def test_sampling_with_gumbel_noise_draws_from_the_filtered_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 12) * 2
    generator = torch.Generator().manual_seed(0)
    draws = 40000
    for top_k, top_p in ((5, 0.0), (0, 0.8)):
        width = 5 if top_p == 0.0 else 12
        noise = fill_gumbel(torch.empty(draws, 1, 1, width), generator)
        picks = torch.stack([sample_with_noise(logits, noise[i], torch.tensor(0.7), top_k=top_k, top_p=top_p,
                                               greedy=False) for i in range(draws)]).flatten()
        expected = filter_logits(logits, temperature=0.7, top_k=top_k, top_p=top_p).softmax(-1).flatten()
        observed = torch.bincount(picks, minlength=12).float() / draws
        assert (observed[expected == 0] == 0).all()
        torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)


def test_a_seeded_stream_is_reproducible_and_sampling_varies(musicgen):
    text = musicgen.encode_text(["warm pads"])
    runs = []
    for _ in range(2):
        stream = GenerationStream(musicgen, window=60, context=10, seed=7)
        stream.set_text(text)
        runs.append(torch.cat([stream.advance(n, Sampling(top_k=50)) for n in (5, 5)], dim=-1))
    assert torch.equal(runs[0], runs[1])
    assert len(torch.unique(runs[0][0, 0])) > 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_steps_give_the_eager_steps_tokens(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cuda", precision="fp32")
    text = musicgen.encode_text(["warm pads"])
    results = []
    for graphs in (False, True):
        stream = GenerationStream(musicgen, window=300, context=20, seed=0, graphs=graphs)
        stream.set_text(text)
        stream.prepare(GREEDY)
        results.append(torch.cat([stream.advance(n, GREEDY) for n in (10, 100, 150, 50)], dim=-1).cpu())
        assert stream.slides == 1
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


def causal_adaptor(decoder, look_back=None):
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor

    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(max_frames=64, look_ahead=0, look_back=look_back), decoder)
    with torch.no_grad():
        adaptor.gates.fill_(4.0)
    cfg = adaptor.config
    features = [torch.randn(1, 80, cfg.face_dim), torch.randn(1, 80, cfg.motion_dim), torch.randn(1, 80, *cfg.flow_shape)]
    return adaptor, features


def test_a_slide_prefills_the_context_under_the_prefix_training_gives_it(musicgen):
    """After a slide, codes and prefix re-anchor at position 0 together: the next chunk equals one straight
    generation continuing the context with the contract's window of that chunk from position 0 on."""
    adaptor, features = causal_adaptor(musicgen.decoder)
    cfg = adaptor.config
    text = musicgen.encode_text(["warm pads"])
    stream = GenerationStream(musicgen, window=40, context=12, seed=0)
    stream.set_text(text)
    with torch.no_grad():
        for _ in range(3):
            advance_with(stream, adaptor, features, 10)
        context = stream.recent_frames(12)
        # after the slide, position p holds the video frame of the context's p-th moment (features re-indexed)
        moved = [f[:, 30 - 12:] for f in features]
        slide = stream.layout.slide_window(10, cfg.max_frames)
        stream.prefix.load(chunk_prefix(adaptor, moved, slide), slide.first)
        stream.slide(refilled=True)
        window, prefix, after = advance_with(stream, adaptor, moved, 10)
        assert (stream.next_position, window.done, window.first) == (13 + 10 + K - 1, 12, 0)
    expected = straight(musicgen, text, 10, prompt=context, adapters=prefix)   # training's view: one window
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert stream.slides == 1


@pytest.mark.parametrize("look_back", [None, 5])
def test_the_streamed_prefix_equals_the_window_recomputed_across_a_slide_and_a_prompt_change(musicgen, look_back):
    """Each frame's prefix computed once, when its position is reached (`ConditionAdaptor.fill`), against
    the whole window recomputed every chunk: the same codes bit for bit in fp32, and the same prefix rows
    within fp32 rounding (relative 1e-5: the projections run over fewer rows at a time, and the CPU's
    matrix products round differently by row count)."""
    from expotion_live.features.schema import TimelineWindow

    adaptor, features = causal_adaptor(musicgen.decoder, look_back)
    cfg = adaptor.config
    video = TimelineWindow(0.0, features[0][0].numpy(), features[1][0].numpy(), features[2][0].numpy())
    runs = []
    for streamed in (True, False):
        stream = GenerationStream(musicgen, window=40, context=12, seed=0)
        buffers = stream.condition(adaptor)
        stream.set_text(musicgen.encode_text(["warm pads"]))
        codes, rows, origin = [], [], 0       # origin: the video frame at the stream's position 0
        with torch.no_grad():
            for c, n in enumerate((6, 10, 9, 10, 8, 10)):
                if c == 3:
                    stream.set_text(musicgen.encode_text(["dark drums"]))
                if stream.started and not stream.fits(n):
                    origin += stream.frames_done - stream.context
                    slide = stream.layout.slide_window(n, cfg.max_frames)
                    buffers.reset()
                    sliced = TimelineWindow(0.0, *(x[:origin + slide.newest + 1] for x in
                                                   (video.face, video.motion, video.flow)))
                    adaptor.fill(buffers, sliced, slide) if streamed else buffers.load(
                        adaptor.prefix(sliced, slide), slide.first)
                    stream.slide(refilled=True)
                window = stream.next_window(n, cfg.max_frames)
                upto = TimelineWindow(0.0, *(x[:origin + window.newest + 1] for x in
                                             (video.face, video.motion, video.flow)))
                if streamed:
                    if not stream.started:
                        buffers.reset()
                    adaptor.fill(buffers, upto, window)
                else:
                    buffers.load(adaptor.prefix(upto, window), window.first)
                codes.append(stream.advance(n, GREEDY, window))
                rows.append([layer.k_p[:, :, :window.newest + 1].clone() for layer in buffers.adapted()])
        assert stream.slides == 1
        runs.append((torch.cat(codes, dim=-1), rows))
    (streamed_codes, streamed_rows), (window_codes, window_rows) = runs
    torch.testing.assert_close(streamed_codes, window_codes, rtol=0, atol=0)
    for a, b in zip(streamed_rows, window_rows):
        for x, y in zip(a, b):
            assert ((x - y).norm() / y.norm()).item() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_steps_with_an_adaptor_give_the_eager_steps_tokens(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cuda", precision="fp32")
    adaptor, features = gated_adaptor(musicgen.decoder, 40)
    cfg = adaptor.config
    text = musicgen.encode_text(["warm pads"])
    results = []
    for graphs in (False, True):
        stream = GenerationStream(musicgen, window=120, context=20, seed=0, graphs=graphs)
        stream.set_text(text)
        chunks = []
        for c, n in enumerate((10, 30, 30, 30, 30)):                # the last one slides (130 + K > 120)
            with torch.no_grad():
                window = stream.next_window(n, cfg.max_frames)
                prefix = adaptor.adapters(*(f[:, :window.frames].cuda() for f in features), first=window.first)
                stream.condition(adaptor).load(prefix, window.first)
            chunks.append(stream.advance(n, GREEDY, window))
        assert stream.slides == 1
        results.append(torch.cat(chunks, dim=-1).cpu())
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


def test_a_stream_refuses_a_decoder_cast_after_it_allocated_its_cache(tiny_musicgen_dir):
    """Its cache was made for the decoder's fp32 numba step; cast to bf16, the decoder would read it wrongly."""
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, precision="int8")
    stream = GenerationStream(musicgen, window=60, context=10, seed=0)
    stream.set_text(musicgen.encode_text(["warm pads"]))
    stream.advance(5, GREEDY)
    musicgen.decoder.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="moved or cast .* make a new GenerationStream"):
        stream.advance(5, GREEDY)
    musicgen.decoder.float()           # back where the cache was made: the stream goes on
    assert musicgen.decoder.backend.name == "int8-numba"
    assert stream.advance(5, GREEDY).shape == (1, 4, 5)

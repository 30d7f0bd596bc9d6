"""MusicGenSource on the tiny random MusicGen: streamed continuation, overlap decode, text cache, adaptor swap."""
import numpy as np
import pytest
import torch

from expotion_live.engine.musicgen_source import MusicGenSource
from expotion_live.engine.source import ChunkRequest, GenerationParams
from test_engine_scheduler import blank_window

PARAMS = GenerationParams(prompt="warm pads", cfg=3.0, temperature=1.0, top_k=250, top_p=0.0)


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, precision="fp32")


def request(index, start_frame, n_frames=25, overlap=1280, params=PARAMS):
    return ChunkRequest(index=index, start_frame=start_frame, n_frames=n_frames,
                        overlap_samples=0 if index == 0 else overlap, window=blank_window(300), params=params)


def test_chunks_continue_and_overlap_matches_the_previous_tail(musicgen):
    source = MusicGenSource(musicgen, context_frames=50, window_frames=100, decode_context_frames=10, seed=0)
    first = source.render(request(0, 0, n_frames=10))
    second = source.render(request(1, 10, n_frames=10))
    assert first.dtype == np.float32 and first.shape == (10 * 640,)
    assert second.shape == (1280 + 10 * 640,)
    assert source._history.shape == (1, 4, 10)                       # what EnCodec re-decodes next time
    assert source.stream.frames_done == 20 and source.stream.slides == 0   # one stream, continued
    tail, overlap = first[-1280:], second[:1280]
    # The overlap re-decodes the same codes with more context: same sound, a little different at the edge.
    corr = np.dot(tail, overlap) / np.sqrt(np.dot(tail, tail) * np.dot(overlap, overlap))
    assert corr > 0.5


def test_text_is_encoded_only_when_the_prompt_changes(musicgen):
    source = MusicGenSource(musicgen, context_frames=25, seed=0)
    source.render(request(0, 0, n_frames=5))
    source.render(request(1, 5, n_frames=5))
    assert source.text_encodings == 1
    changed = GenerationParams(prompt="dark drums", cfg=1.0, temperature=0.8, top_k=50, top_p=0.0)
    source.render(request(2, 10, n_frames=5, params=changed))
    assert source.text_encodings == 2 and source.prompt_used == "dark drums"


def test_a_prompt_seen_recently_is_not_encoded_again_and_conditions_as_before(musicgen):
    """Steering moves between a few prompts: T5 runs once for each, and a prompt coming back
    sets the same cross-attention keys and values a fresh encoding would."""
    source = MusicGenSource(musicgen, context_frames=25, seed=0)
    other = GenerationParams(prompt="dark drums", cfg=3.0, temperature=1.0, top_k=250, top_p=0.0)
    source.render(request(0, 0, n_frames=5))
    first_k = source.stream.cache.cross_k.clone()
    source.render(request(1, 5, n_frames=5, params=other))
    assert not torch.equal(source.stream.cache.cross_k, first_k)
    source.render(request(2, 10, n_frames=5))
    source.render(request(3, 15, n_frames=5, params=other))
    source.render(request(4, 20, n_frames=5))
    assert source.text_encodings == 2 and source.prompt_used == request(0, 0, 1).params.prompt
    assert torch.equal(source.stream.cache.cross_k, first_k)


def test_untrained_adaptor_reproduces_the_base_model_and_swaps_at_the_next_chunk(musicgen):
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor

    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(), musicgen.decoder)
    plain = MusicGenSource(musicgen, seed=3)
    adapted = MusicGenSource(musicgen, adaptor=adaptor, seed=3)
    for index in range(2):
        np.testing.assert_array_equal(plain.render(request(index, 10 * index, 10)),
                                      adapted.render(request(index, 10 * index, 10)))
    with torch.no_grad():
        adaptor.gates.fill_(5.0)                       # a "trained" adaptor now changes the music
    assert not np.array_equal(plain.render(request(2, 20, 10)), adapted.render(request(2, 20, 10)))
    assert adapted.stream.prefix is not None
    adapted.set_adaptor(None)                          # removed: the next chunk is the base model's
    adapted.render(request(3, 30, 10))
    assert adapted.stream.prefix is None


def test_the_stream_slides_ahead_of_the_chunk_that_needs_it_and_the_music_goes_on(musicgen):
    source = MusicGenSource(musicgen, context_frames=20, window_frames=60, seed=0)
    chunks = []
    for i in range(8):                                   # 80 frames through a 60-position window
        slides = source.stream.slides
        chunks.append(source.render(request(i, 10 * i, 10)))
        assert source.stream.slides == slides            # never inside a render: prepare_next slid first
        source.prepare_next(10)                          # the scheduler's call right after a chunk
    assert source.stream.slides >= 1
    assert all(np.isfinite(c).all() and np.abs(c).max() > 0 for c in chunks)


def test_steering_words_reach_the_prompt_without_an_adaptor(musicgen):
    from expotion_live.engine.steering import PromptSteerer

    source = MusicGenSource(musicgen, steering=PromptSteerer(), seed=0)
    window = blank_window(300)
    window.motion[:, -2] = 0.9                         # energetic motion for the whole window
    source.render(ChunkRequest(0, 0, 5, 0, window, PARAMS))
    assert source.prompt_used.startswith("warm pads")
    assert source.prompt_used == "warm pads, " + ", ".join(source.steering_words)   # reported = played
    assert "energetic" in source.steering_words


def test_warm_up_measures_what_the_machine_sustains_and_says_so_when_it_falls_short(musicgen):
    """A chunk rendered warm at warm-up is the speed the show will get; below real time the performer is told
    before it starts, with the precision that would render faster, and the stream is left fresh."""
    from expotion_live.live.source import speed_notice

    source = MusicGenSource(musicgen, context_frames=25, window_frames=100, seed=0)
    source.warm_up(PARAMS, blank_window(50), chunk_frames=25)
    assert source.warm_up_rtf is not None and source.warm_up_rtf > 0
    assert source.stream.frames_done == 0                             # nothing of the measurement is kept
    assert (speed_notice(source) == "") == (source.warm_up_rtf >= 1.0)
    source.warm_up_rtf = 0.45                                         # as a 2-core laptop measures musicgen-small
    notice = speed_notice(source)
    assert notice.startswith("MusicGen renders 0.45x real time on this machine (fp32 on cpu)")
    assert 'precision = "int8"' in notice

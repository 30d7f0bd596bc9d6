"""The adaptor's reach, exactly: the logits at position p do not depend on frames after p + L
(look-ahead), and what each adapted layer adds at p on no frame before p - n*B (look-back).

Checked bit for bit on the real tiny MusicGen in each place the prefix is attended: the
training forward (whole sequence, SDPA, with the window at an offset as live-shaped
training puts it), the streamed decode step on every CPU backend (prefix buffers loaded
at a live offset, a CFG batch), and the stream's greedy codes; an unlimited adaptor (the
paper) is shown to see those frames, so each check can fail.
"""
import pytest
import torch

from expotion_live.model.adaptor import AdaptorConfig, AdaptorError, ConditionAdaptor, PrefixBuffers
from expotion_live.model.decoder import fused_attention
from expotion_live.model.stream import GenerationStream, Sampling

SMALL = dict(flow_channels=(8, 16), flow_dim=32, max_frames=64)


@pytest.fixture(scope="module")
def fp32(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def int8(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="int8")


def adaptor_for(decoder, look_ahead, look_back=None):
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(look_ahead=look_ahead, look_back=look_back, **SMALL), decoder)
    with torch.no_grad():
        adaptor.gates.fill_(4.0)                  # open: the prefix changes the music
    return adaptor


def windows(n_frames: int, changed_from: int, before: bool = False):
    """Two feature windows (face, motion, flow) of n frames, equal before frame `changed_from`, different after
    (`before`: the other way round)."""
    g = torch.Generator().manual_seed(1)
    cfg = AdaptorConfig(**SMALL)
    a = [torch.randn(1, n_frames, cfg.face_dim, generator=g), torch.randn(1, n_frames, cfg.motion_dim, generator=g),
         torch.randn(1, n_frames, *cfg.flow_shape, generator=g)]
    b = [x.clone() for x in a]
    span = slice(None, changed_from) if before else slice(changed_from, None)
    for x in b:
        x[:, span] = torch.randn(x[:, span].shape, generator=g)
    return a, b


@pytest.mark.parametrize("first", [0, 5, 9])
def test_training_forward_logits_ignore_frames_past_the_look_ahead(fp32, first):
    L, T, changed = 3, 24, 14                     # frames 14.. differ: positions p with p - first + L < 14 keep theirs
    codes = torch.randint(0, 2048, (1, 4, T), generator=torch.Generator().manual_seed(2))
    text = fp32.encode_text(["warm pads"])
    a, b = windows(T, changed)
    kept = changed - L + first                    # positions 0 .. kept - 1 cannot see frame `changed`

    def logits(look_ahead, features):
        hooks = adaptor_for(fp32.decoder, look_ahead).adapters(*features, first=first)
        return fp32.decoder(codes, text, hooks, attend=fused_attention)   # (1, K, T, V), as training runs it

    limited_a, limited_b = logits(L, a), logits(L, b)
    assert torch.equal(limited_a[:, :, :kept], limited_b[:, :, :kept])
    assert not torch.equal(limited_a[:, :, kept], limited_b[:, :, kept])      # the first position that may see it
    unlimited_a, unlimited_b = logits(None, a), logits(None, b)
    assert not torch.equal(unlimited_a[:, :, 0], unlimited_b[:, :, 0])          # the paper's: every position sees it


@torch.no_grad()
def step_logits(musicgen, adaptor, prefix, first: int, n_positions: int):
    """The streamed path: prefix buffers loaded at `first`, prefill of position 0, then one decode step per position;
    the logits (2, K, n_positions, V) of a CFG batch [conditional; null]."""
    decoder = musicgen.decoder
    cache = decoder.allocate_cache(2, n_positions)
    decoder.write_text(cache, musicgen.encode_text(["warm pads"]).with_null())
    buffers = PrefixBuffers(adaptor, 48)
    buffers.load(prefix, first)
    buffers = buffers.layers
    codes = torch.randint(0, 2048, (1, 4, n_positions), generator=torch.Generator().manual_seed(3)).expand(2, 4, -1)
    out = [decoder.prefill_codes(codes[..., :1], cache, buffers)]
    for p in range(1, n_positions):
        out.append(decoder.decode_step(codes[..., p:p + 1], torch.tensor([p]), cache, buffers,
                                       attend_length=cache.attend_length(p)))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("backend", ["modules", "cpu-modules", "int8-numba"])
def test_live_step_logits_ignore_frames_past_the_look_ahead(fp32, int8, backend):
    musicgen = int8 if backend == "int8-numba" else fp32
    musicgen.decoder.choose_backend(backend)
    try:
        L, T, changed, first = 2, 30, 20, -6       # a live window reaches back before position 0
        a, b = windows(T, changed)
        kept = changed - L + first

        def logits(look_ahead, features):
            adaptor = adaptor_for(musicgen.decoder, look_ahead)
            return step_logits(musicgen, adaptor, adaptor.adapters(*features), first, 24)

        limited_a, limited_b = logits(L, a), logits(L, b)
        assert torch.equal(limited_a[:, :, :kept], limited_b[:, :, :kept])
        assert not torch.equal(limited_a[:, :, kept], limited_b[:, :, kept])
        assert not torch.equal(logits(None, a)[:, :, 0], logits(None, b)[:, :, 0])
    finally:
        musicgen.decoder.choose_backend()


def test_the_stream_plays_the_same_codes_until_changed_frames_come_within_reach(fp32):
    """End to end: a chunk's window whose newest frames change; the codes before their moment stay."""
    n, changed = 20, 10

    def chunk(look_ahead, features):
        stream = GenerationStream(fp32, window=64, context=8, seed=0)
        stream.set_text(fp32.encode_text(["warm pads"]))
        window = stream.next_window(n, 64)          # from position 0 to the chunk's last, n + K - 1
        adaptor = adaptor_for(fp32.decoder, look_ahead)
        stream.condition(adaptor).load(adaptor.adapters(*(x[:, :window.frames] for x in features)), window.first)
        return stream.advance(n, Sampling(cfg=3.0, greedy=True), window)   # (1, K, n)

    a, b = windows(n + 4, changed)
    # Window frame f sits at position f; frame f of codebook 0 (position f + 1) is drawn from the step at
    # position f, which with no look-ahead sees frames up to f: frames f < changed cannot see the change.
    kept = changed
    assert torch.equal(chunk(0, a)[:, 0, :kept], chunk(0, b)[:, 0, :kept])
    assert not torch.equal(chunk(0, a), chunk(0, b))          # the change is heard from its own moment on
    assert not torch.equal(chunk(None, a)[:, 0, :kept], chunk(None, b)[:, 0, :kept])


@pytest.mark.parametrize("first", [0, 6])
def test_each_layers_prefix_term_ignores_frames_before_its_look_back(fp32, first):
    """Layer n's term at p reads frames from p - n*B on: the first layer's keys hold their own frame, each
    prefix self-attention reaches B further back. Unlimited, the oldest frame reaches every position."""
    B, T, changed = 4, 30, 9                       # frames 0..8 differ
    a, b = windows(T, changed, before=True)
    config = fp32.decoder.config
    H = config.num_attention_heads
    q = torch.randn(1, H, T, config.hidden_size // H, generator=torch.Generator().manual_seed(4))
    positions = first + torch.arange(T)

    def terms(look_back, features):
        layers = adaptor_for(fp32.decoder, 0, look_back).adapters(*features, first=first)
        return [layer(q, positions) for layer in layers if layer is not None]   # (1, H, T, Dh) each

    with torch.no_grad():
        limited = zip(terms(B, a), terms(B, b))
        for n, (term_a, term_b) in enumerate(limited, start=1):
            reach = changed + n * B                # the first frame whose term cannot see frame changed - 1
            assert torch.equal(term_a[:, :, reach:], term_b[:, :, reach:]), n
            assert not torch.equal(term_a[:, :, reach - 1], term_b[:, :, reach - 1]), n
        unlimited_a, unlimited_b = terms(None, a), terms(None, b)
        assert not torch.equal(unlimited_a[0][:, :, -1], unlimited_b[0][:, :, -1])


def test_the_limits_are_stored_and_old_checkpoints_read_as_unlimited(fp32, tmp_path):
    from expotion_live.model.adaptor import load_adaptor, save_adaptor

    for limits in ((0, 10), (7, None), (None, 3)):
        save_adaptor(adaptor_for(fp32.decoder, *limits), tmp_path / str(limits))
        config = load_adaptor(tmp_path / str(limits), fp32).config
        assert (config.look_ahead, config.look_back) == limits
    header = AdaptorConfig(**SMALL).to_json()
    del header["look_ahead"], header["look_back"]   # written before the settings existed: the paper's unlimited
    config = AdaptorConfig.from_json(header)
    assert (config.look_ahead, config.look_back) == (None, None)
    for name in ("look_ahead", "look_back"):
        with pytest.raises(AdaptorError, match=f"{name} -1 must be a whole number"):
            AdaptorConfig(**{name: -1})

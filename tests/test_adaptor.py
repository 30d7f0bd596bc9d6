"""The condition adaptor on the real tiny MusicGen: identity at init, hook alignment, checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM
from expotion_live.model.adaptor import (
    AdaptorConfig, AdaptorError, ConditionAdaptor, load_adaptor, save_adaptor, trainable_share,
)
from expotion_live.model.config import DecoderConfig
from expotion_live.model.decoder import MusicGenDecoder

SMALL = AdaptorConfig(flow_channels=(8, 16), flow_dim=32, max_frames=64)


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")


def visual(B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, FACE_DIM, generator=g), torch.randn(B, T, MOTION_DIM, generator=g),
            torch.randn(B, T, *FLOW_SHAPE, generator=g))


def with_gates(adaptor: ConditionAdaptor, value: float) -> ConditionAdaptor:
    with torch.no_grad():
        adaptor.gates.fill_(value)
    return adaptor


def test_zero_gates_reproduce_the_base_model_exactly(musicgen):
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(SMALL, musicgen.decoder)
    text = musicgen.encode_text(["calm ambient piano", "fast energetic drums"])
    codes = torch.randint(0, 2048, (2, 4, 20), generator=torch.Generator().manual_seed(1))
    hooks = adaptor.adapters(*visual(2, 20))
    base = musicgen.decoder(codes, text)
    assert torch.equal(musicgen.decoder(codes, text, hooks), base)

    # ...and generation (prefill + static decode steps, CFG batch of two) is unchanged token for token.
    plain = musicgen.generate(text, 12, greedy=True, cfg=3.0)
    assert torch.equal(musicgen.generate(text, 12, greedy=True, cfg=3.0, adapters=hooks), plain)

    # Non-zero gates really change the logits (the hook is live, the test can fail).
    hooks = with_gates(adaptor, 2.0).adapters(*visual(2, 20))
    assert not torch.allclose(musicgen.decoder(codes, text, hooks), base, atol=1e-4)


def test_cached_decoding_with_adaptor_matches_the_reference_forward(musicgen):
    """prefill + decode_step see the prefix at the same positions as the whole-sequence forward."""
    torch.manual_seed(0)
    adaptor = with_gates(ConditionAdaptor(SMALL, musicgen.decoder), 3.0)
    B, T = 1, 10
    text = musicgen.encode_text(["warm electronic groove"])
    codes = torch.randint(0, 2048, (B, 4, T), generator=torch.Generator().manual_seed(2))
    hooks = adaptor.adapters(*visual(B, 16, seed=3))
    with torch.no_grad():
        reference = musicgen.decoder(codes, text, hooks)                    # (B, K, T, V)
        cache = musicgen.decoder.allocate_cache(B, T)
        prefilled = musicgen.decoder.prefill(codes[:, :, :6], cache, text, hooks)
        assert torch.allclose(prefilled, reference[:, :, 5], atol=1e-5)
        for p in range(6, T):
            step = musicgen.decoder.decode_step(codes[:, :, p:p + 1], torch.tensor([p]), cache, hooks)
            assert torch.allclose(step, reference[:, :, p], atol=1e-5)


def test_classifier_free_guidance_gets_the_prefix_in_both_halves(musicgen):
    torch.manual_seed(0)
    adaptor = with_gates(ConditionAdaptor(SMALL, musicgen.decoder), 3.0)
    face, motion, flow = visual(2, 12)
    hooks = adaptor.adapters(face, motion, flow)
    doubled = adaptor.adapters(*(torch.cat([x, x]) for x in (face, motion, flow)))
    q = torch.randn(4, musicgen.decoder.config.num_attention_heads, 3, musicgen.decoder.config.head_dim)
    positions = torch.tensor([4, 5, 30])  # 30 is past the window: uses its last frame
    assert torch.allclose(hooks[-1](q, positions), doubled[-1](q, positions), atol=1e-6)


def test_parameter_count_matches_a_hand_count(musicgen):
    cfg = musicgen.decoder.config
    d, N = cfg.hidden_size, cfg.num_hidden_layers
    config = AdaptorConfig(n_layers=1, flow_channels=(8, 16), flow_dim=32, max_frames=64)
    adaptor = ConditionAdaptor(config, musicgen.decoder)
    joint = 12 + 12 + 12
    flow_cnn = (2 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 9 * 32 + 32)  # 3x3 convs with biases
    hand = (FACE_DIM * 12 + MOTION_DIM * 12           # W_f, W_m (eq. 2, 4)
            + flow_cnn + 32 * 12                      # Flow-Embedding CNN (eq. 5) and its projection
            + 64 * joint                              # z_pos (eq. 6)
            + 64 * d                                  # H0^p
            + 1 * (joint * d + 64 * d + 1))           # per adapted layer: W_e,l, pos_l, g_l
    own, frozen, share = trainable_share(adaptor)
    assert own == hand
    assert frozen == sum(p.numel() for p in musicgen.decoder.parameters())
    assert share == pytest.approx(100 * hand / (hand + frozen))
    assert not any(p.requires_grad for p in musicgen.decoder.parameters())
    hooks = adaptor.adapters(*visual(1, 8))
    assert hooks[:N - 1] == [None] * (N - 1) and hooks[-1] is not None


def test_save_and_load_round_trip(musicgen, tmp_path):
    torch.manual_seed(0)
    adaptor = with_gates(ConditionAdaptor(SMALL, musicgen.decoder), 0.7)
    save_adaptor(adaptor, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["adaptor.json", "adaptor.safetensors"]
    loaded = load_adaptor(tmp_path / "ckpt" / "adaptor.safetensors", musicgen)
    assert loaded.config == SMALL
    for (name, a), (_, b) in zip(adaptor.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    codes = torch.randint(0, 2048, (1, 4, 8), generator=torch.Generator().manual_seed(0))
    text = musicgen.encode_text(["jazz trio"])
    feats = visual(1, 8)
    assert torch.equal(musicgen.decoder(codes, text, adaptor.adapters(*feats)),
                       musicgen.decoder(codes, text, loaded.adapters(*feats)))


def test_load_errors_are_clear(musicgen, tmp_path):
    adaptor = ConditionAdaptor(SMALL, musicgen.decoder)
    save_adaptor(adaptor, tmp_path / "ok")

    with pytest.raises(AdaptorError, match="does not exist"):
        load_adaptor(tmp_path / "missing", musicgen)

    other = MusicGenDecoder(DecoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64))
    with pytest.raises(AdaptorError, match="trained for a decoder with 2 layers of width 64"):
        load_adaptor(tmp_path / "ok", other)

    # A config from another run beside these weights is refused, not silently combined.
    save_adaptor(ConditionAdaptor(AdaptorConfig(flow_cnn=False, max_frames=64), musicgen.decoder), tmp_path / "b")
    (tmp_path / "ok" / "adaptor.json").write_text((tmp_path / "b" / "adaptor.json").read_text())
    with pytest.raises(AdaptorError, match="does not belong"):
        load_adaptor(tmp_path / "ok", musicgen)

    (tmp_path / "b" / "adaptor.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdaptorError, match="not a readable safetensors"):
        load_adaptor(tmp_path / "b", musicgen)

    (tmp_path / "b" / "adaptor.json").write_text("{broken")
    with pytest.raises(AdaptorError, match="not valid JSON"):
        load_adaptor(tmp_path / "b", musicgen)


def test_bad_inputs_are_rejected(musicgen):
    adaptor = ConditionAdaptor(SMALL, musicgen.decoder)
    face, motion, flow = visual(1, 8)
    with pytest.raises(AdaptorError, match="motion features have shape"):
        adaptor.adapters(face, motion[..., :5], flow)
    with pytest.raises(AdaptorError, match="this adaptor has positions 0..63"):
        adaptor.adapters(*visual(1, 65))
    with pytest.raises(AdaptorError, match="n_layers=5"):
        ConditionAdaptor(AdaptorConfig(n_layers=5), musicgen.decoder)
    assert AdaptorConfig.from_json(json.loads(json.dumps(SMALL.to_json()))) == SMALL


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_adaptor_runs_on_a_reduced_precision_decoder(tiny_musicgen_dir, precision):
    """The prefix goes through the same swapped Linear layers as the music; zero gates still change nothing."""
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision=precision)
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(SMALL, musicgen.decoder)
    text = musicgen.encode_text(["dark bass line"])
    codes = torch.randint(0, 2048, (1, 4, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        base = musicgen.decoder(codes, text)
        assert torch.equal(musicgen.decoder(codes, text, adaptor.adapters(*visual(1, 12))), base)
        adapted = musicgen.decoder(codes, text, with_gates(adaptor, 2.0).adapters(*visual(1, 12)))
    assert torch.isfinite(adapted).all() and not torch.allclose(adapted, base, atol=1e-3)

"""An adaptor with open gates plays near its fp32 logits at every precision, on every decode backend that runs it.

Oracle: the tiny random MusicGen in fp32 on the reference backend ("modules"), with the
same adaptor weights. Each precision is held to its logit bound (`precision.LOGIT_TOLERANCE`,
the bound the base model is held to); backends of one precision that share its weights are
held to fp32 rounding of each other. The adaptor's own term is far larger than that
rounding (and than the bound, but for int4, whose bound is coarse), so a backend that
dropped or misplaced the prefix would fail.
"""
from __future__ import annotations

import pytest
import torch

from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, PrefixBuffers
from expotion_live.model.backends import NAMES, choose
from expotion_live.model.precision import LOGIT_TOLERANCE

K, POSITIONS, FIRST = 4, 20, 2


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm() / ref.norm()).item()


@pytest.fixture(scope="module")
def models(tiny_musicgen_dir):
    from expotion_live.model.generate import MusicGen

    return {p: MusicGen.load(tiny_musicgen_dir, device="cpu", precision=p) for p in ("fp32", "bf16", "int8", "int4")}


@pytest.fixture(scope="module")
def adaptor_state(models):
    torch.manual_seed(0)
    adaptor = ConditionAdaptor(AdaptorConfig(flow_channels=(8,), flow_dim=16, max_frames=64), models["fp32"].decoder)
    with torch.no_grad():
        adaptor.gates.fill_(2.0)                  # open, as training leaves them
    return adaptor.config, adaptor.state_dict()


@torch.no_grad()
def streamed_logits(musicgen, config, state, with_adaptor: bool = True) -> torch.Tensor:
    """Prefill of position 0, then one decode step per position, the prefix buffers loaded at FIRST:
    the logits (2, K, POSITIONS, V) of a CFG batch [conditional; null], as the live stream runs it."""
    decoder = musicgen.decoder
    buffers = None
    if with_adaptor:
        adaptor = ConditionAdaptor(config, decoder)
        adaptor.load_state_dict(state)
        g = torch.Generator().manual_seed(1)
        T = POSITIONS - FIRST
        prefix = adaptor.adapters(torch.randn(1, T, config.face_dim, generator=g),
                                  torch.randn(1, T, config.motion_dim, generator=g),
                                  torch.randn(1, T, *config.flow_shape, generator=g), first=FIRST)
        held = PrefixBuffers(adaptor, config.max_frames)
        held.load(prefix, FIRST)
        buffers = held.layers
    cache = decoder.allocate_cache(2, POSITIONS)
    decoder.write_text(cache, musicgen.encode_text(["warm pads"]).with_null())
    codes = torch.randint(0, 2048, (1, K, POSITIONS), generator=torch.Generator().manual_seed(3)).expand(2, K, -1)
    out = [decoder.prefill_codes(codes[..., :1], cache, buffers)]
    for p in range(1, POSITIONS):
        out.append(decoder.decode_step(codes[..., p:p + 1], torch.tensor([p]), cache, buffers,
                                       attend_length=cache.attend_length(p)))
    return torch.stack(out, dim=2).float()


def runnable(decoder) -> list[str]:
    names = []
    for name in NAMES:
        try:
            choose(decoder, name)
        except ValueError:
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "int4"])
def test_an_open_adaptor_stays_within_its_precisions_bound_on_every_backend(models, adaptor_state, precision):
    config, state = adaptor_state
    reference_model = models["fp32"]
    reference_model.decoder.choose_backend("modules")
    reference = streamed_logits(reference_model, config, state)
    adaptor_term = relative_error(streamed_logits(reference_model, config, state, with_adaptor=False), reference)
    reference_model.decoder.choose_backend()
    musicgen = models[precision]
    names = runnable(musicgen.decoder)
    assert "modules" in names and (precision not in ("int8", "int4") or f"{precision}-numba" in names)
    bound = max(LOGIT_TOLERANCE[precision], 1e-5)     # fp32: rounding only
    played = {}
    try:
        for name in names:
            musicgen.decoder.choose_backend(name)
            played[name] = streamed_logits(musicgen, config, state)
            error = relative_error(played[name], reference)
            assert error < bound, f"{precision} on {name}: relative logit error {error:.2e} (bound {bound:g})"
    finally:
        musicgen.decoder.choose_backend()
    for name, logits in played.items():                # the same weights: rounding apart, whatever the backend
        assert relative_error(logits, played["modules"]) < 1e-4, name
    assert adaptor_term > 1000 * 1e-4, adaptor_term    # the prefix moves the logits far more than that rounding
    assert adaptor_term > 10 * bound or precision == "int4", adaptor_term

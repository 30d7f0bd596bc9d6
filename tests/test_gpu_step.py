"""The fused-projection decoding step (model.gpu_step) against the modules' own step, on the CPU in fp32."""
import pytest
import torch

from expotion_live.model.loading import load_decoder


@pytest.fixture()
def decoders(tiny_musicgen_dir):
    return load_decoder(tiny_musicgen_dir), load_decoder(tiny_musicgen_dir)


@pytest.mark.parametrize("with_adaptor", [False, True], ids=["plain", "adaptor"])
def test_fused_step_gives_the_modules_logits(decoders, with_adaptor):
    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor
    from expotion_live.model.text import TextCondition

    plain, fused = decoders
    fused.choose_backend("fused-gpu")   # what a decoder on CUDA picks itself
    attn = fused.layers[0].self_attn
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()
    generator = torch.Generator().manual_seed(0)
    D = plain.config.hidden_size
    text = TextCondition(torch.randn(2, 5, D, generator=generator), torch.tensor([[True] * 5, [False] * 5]))
    codes = torch.randint(0, plain.config.vocab_size, (2, 4, 12), generator=generator)
    adapters = None
    if with_adaptor:
        torch.manual_seed(0)
        adaptor = ConditionAdaptor(AdaptorConfig(max_frames=32), plain)
        with torch.no_grad():
            adaptor.gates.fill_(3.0)
        cfg = adaptor.config
        adapters = adaptor.adapters(torch.randn(1, 12, cfg.face_dim), torch.randn(1, 12, cfg.motion_dim),
                                    torch.randn(1, 12, *cfg.flow_shape))
    outputs = []
    for decoder in (plain, fused):
        cache = decoder.allocate_cache(2, 12)
        with torch.no_grad():
            decoder.prefill(codes[:, :, :8], cache, text, adapters)
            outputs.append(torch.stack([decoder.decode_step(codes[:, :, p:p + 1], torch.tensor([p]), cache, adapters,
                                                            attend_length=cache.attend_length(p))
                                        for p in range(8, 12)]))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_an_int8_decoder_is_not_fused(tiny_musicgen_dir):
    from expotion_live.model.precision import apply_precision

    decoder = apply_precision(load_decoder(tiny_musicgen_dir), "int8")
    with pytest.raises(ValueError, match="'fused-gpu' cannot run this decoder"):
        decoder.choose_backend("fused-gpu")
    assert decoder.backend.name == "int8-numba"   # the refused choice changed nothing

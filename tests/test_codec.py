"""Our EnCodec wrapper against transformers' EnCodec on the same random weights.

The wrapper folds weight norm into the weights once and, on CPUs with native bf16, keeps
the decoder's LSTM in bf16 (`codec.Bf16Recurrence`): decoded audio must stay within
1e-4 (relative) of transformers' fp32 decode, and within float rounding with the LSTM in fp32.
"""
import numpy as np
import pytest
import torch

from expotion_live.model import codec as codec_mod
from expotion_live.model.loading import load_codec, open_checkpoint


@pytest.fixture(scope="module")
def reference(tiny_musicgen_dir):
    from transformers import MusicgenForConditionalGeneration

    return MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen_dir).audio_encoder.eval()


def transformers_decode(encodec, codes):
    with torch.no_grad():
        return encodec.decode(codes[None], [None]).audio_values[:, 0, :codes.shape[-1] * 640].numpy()


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_decoded_audio_matches_transformers(tiny_musicgen_dir, reference):
    ours = load_codec(open_checkpoint(tiny_musicgen_dir))
    codes = torch.randint(0, 2048, (1, 4, 35), generator=torch.Generator().manual_seed(0))
    expected = transformers_decode(reference, codes)
    bf16 = codec_mod.bf16_recurrence_helps(torch.device("cpu"))
    assert any(isinstance(layer, codec_mod.Bf16Recurrence) for layer in
               (getattr(m, "lstm", None) for m in ours.encodec.decoder.layers)) == bf16
    assert relative_error(ours.decode(codes), expected) < (1e-4 if bf16 else 1e-5)


def test_weight_norm_is_folded_and_the_fp32_lstm_decodes_exactly(tiny_musicgen_dir, reference):
    from torch.nn.utils import parametrize

    ours = load_codec(open_checkpoint(tiny_musicgen_dir))
    assert not any(parametrize.is_parametrized(m) for m in ours.encodec.modules())
    for layer in ours.encodec.decoder.layers:           # the LSTM back in fp32, as on a CPU without bf16
        if isinstance(getattr(layer, "lstm", None), codec_mod.Bf16Recurrence):
            layer.lstm = layer.lstm.lstm.float()
    codes = torch.randint(0, 2048, (1, 4, 20), generator=torch.Generator().manual_seed(1))
    assert relative_error(ours.decode(codes), transformers_decode(reference, codes)) < 1e-5   # float rounding only

"""Random MusicGen checkpoints in the real on-disk format, built in code.

Tests and benchmarks need no model hub: they run on random weights
saved exactly as `MusicgenForConditionalGeneration.save_pretrained` and
`MusicgenProcessor.save_pretrained` write them: the same files a user downloads from
`facebook/musicgen-small`, so the loading code under test is the real one.

- "tiny": every test that needs a model (builds and saves in a few seconds).
- "small", "medium", "large": the musicgen-small (24 layers, d=1024, 16 heads),
  -medium (48, 1536, 24) and -large (48, 2048, 32) architectures with the T5-base
  text encoder, for benchmarks only (fp32 on disk unless a dtype is given: large is
  13 GB in fp32, 6.6 GB in bf16).

The tokenizer is a sentencepiece-style Unigram model trained in code on a few
sentences, wrapped as transformers' `T5Tokenizer` like the hub's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..features.schema import FRAME_RATE

SAMPLE_RATE = 32000
HOP_LENGTH = SAMPLE_RATE // FRAME_RATE  # 640 = 8*5*4*4, the codec's upsampling ratios below
PAD_TOKEN_ID = 2048  # one past the codebook: MusicGen's pad / decoder start token

# Sentences the tiny tokenizer is trained on: prompt-like words, so encoding a prompt
# yields real pieces rather than <unk>.
_TOKENIZER_CORPUS = [
    "warm electronic groove with soft pads",
    "fast energetic drums and bright synth lead",
    "calm ambient piano with slow strings",
    "dark bass line, heavy kick, minimal techno",
    "happy acoustic guitar and light percussion",
    "sad cello melody in a minor key",
    "upbeat pop song with claps and vocals",
    "lofi hip hop beat with vinyl crackle",
    "orchestral film score with brass and choir",
    "jazz trio with brushed drums and upright bass",
]

_DECODER = {
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, ffn_dim=128),
    "small": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, ffn_dim=4096),
    "medium": dict(num_hidden_layers=48, hidden_size=1536, num_attention_heads=24, ffn_dim=6144),
    "large": dict(num_hidden_layers=48, hidden_size=2048, num_attention_heads=32, ffn_dim=8192),
}
_T5_BASE = dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
_ENCODEC_32KHZ = dict(num_filters=64, hidden_size=128, num_lstm_layers=2)
_TEXT = {
    "tiny": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                 relative_attention_max_distance=32),
    "small": _T5_BASE, "medium": _T5_BASE, "large": _T5_BASE,
}
_CODEC = {
    "tiny": dict(num_filters=2, hidden_size=8, num_lstm_layers=1),
    "small": _ENCODEC_32KHZ, "medium": _ENCODEC_32KHZ, "large": _ENCODEC_32KHZ,
}
PRESETS = tuple(_DECODER)


def _train_tokenizer(vocab_size: int):
    """A T5-style Unigram (sentencepiece) tokenizer trained on `_TOKENIZER_CORPUS`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    special = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2
    spm = Tokenizer(models.Unigram())
    spm.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>",
                                      show_progress=False)
    spm.train_from_iterator(_TOKENIZER_CORPUS, trainer=trainer)
    vocab = [tuple(entry) for entry in json.loads(spm.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _configs(preset: str, text_vocab_size: int):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    decoder = MusicgenDecoderConfig(
        vocab_size=2048, max_position_embeddings=2048, num_codebooks=4, audio_channels=1,
        activation_function="gelu", dropout=0.1, pad_token_id=PAD_TOKEN_ID, bos_token_id=PAD_TOKEN_ID,
        **_DECODER[preset])
    text = T5Config(vocab_size=text_vocab_size, feed_forward_proj="relu", is_encoder_decoder=True,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **_TEXT[preset])
    codec = EncodecConfig(
        sampling_rate=SAMPLE_RATE, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
        codebook_size=2048, use_causal_conv=False, use_conv_shortcut=False, normalize=False,
        audio_channels=1, **_CODEC[preset])
    assert codec.hop_length == HOP_LENGTH and codec.num_quantizers == decoder.num_codebooks
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)


def save_random_musicgen(out_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0,
                         dtype=None, device: str = "cpu") -> Path:
    """Write a random MusicGen (decoder + EnCodec 32 kHz + T5) and its processor to `out_dir`.

    The directory loads with `MusicgenForConditionalGeneration.from_pretrained`,
    `AutoProcessor.from_pretrained` and our `loading.load_decoder` / `MusicGen.load`.
    `device` builds the weights there (a GPU initialises musicgen-large in seconds);
    `dtype` is the precision saved (as hub fine-tunes are often shared in bf16).
    """
    if preset not in _DECODER:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    import torch
    from transformers import EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor

    out_dir = Path(out_dir)
    tokenizer = _train_tokenizer(vocab_size=200 if preset == "tiny" else 1000)
    config = _configs(preset, text_vocab_size=len(tokenizer))

    torch.manual_seed(seed)
    with torch.device(device):
        model = MusicgenForConditionalGeneration(config).eval()
    _fill_codebooks(model.audio_encoder)
    if preset == "tiny":
        _sharpen(model)
    gen = model.generation_config
    gen.decoder_start_token_id = PAD_TOKEN_ID
    gen.pad_token_id = PAD_TOKEN_ID
    gen.bos_token_id = PAD_TOKEN_ID
    gen.do_sample, gen.guidance_scale, gen.top_k, gen.max_length = True, 3.0, 250, 1500
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(out_dir)

    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0)
    MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def _fill_codebooks(encodec) -> None:
    """Give EnCodec's quantiser random codebook vectors (transformers initialises them to zero).

    With zero codebooks every code decodes to the same sound; random ones make the audio
    depend on the codes, as with trained weights, so tests can tell codes apart by their audio.
    """
    import torch

    with torch.no_grad():
        for layer in encodec.quantizer.layers:
            layer.codebook.embed.normal_(0.0, 1.0)
            layer.codebook.embed_avg.copy_(layer.codebook.embed)


def _sharpen(model) -> None:
    """Rescale the tiny decoder so its next-token distributions are peaked and the text matters.

    transformers' std-0.02 init gives near-uniform logits (greedy argmax ties decided by
    float rounding) and a text contribution too small to change a token. Unit-variance
    code embeddings, 1/sqrt(fan-in) projections (including the text projection) and
    larger LM heads make greedy and CFG oracle tests meaningful.
    """
    import torch
    from torch import nn

    with torch.no_grad():
        for emb in model.decoder.model.decoder.embed_tokens:
            emb.weight.normal_(0.0, 1.0)
        for module in [*model.decoder.modules(), model.enc_to_dec_proj]:
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, module.in_features ** -0.5)
        for head in model.decoder.lm_heads:
            head.weight.mul_(4.0)  # logits of std ~4: a clear winner at most steps

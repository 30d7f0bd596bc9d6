"""The on-disk round trip: transformers' save_pretrained -> our modules, and clear errors when it cannot be."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import MusicgenForConditionalGeneration

from expotion_live.model.config import CheckpointError
from expotion_live.model.generate import MusicGen
from expotion_live.model.loading import load_decoder


@pytest.fixture
def model_copy(tiny_musicgen_dir, tmp_path):
    """A writable copy of the tiny checkpoint to damage."""
    return shutil.copytree(tiny_musicgen_dir, tmp_path / "model")


def edit_config(path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def edit_weights(path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_saved_random_model_loads_and_generates(tiny_musicgen_dir):
    reference = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen_dir)
    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    ours = dict(musicgen.decoder.named_parameters())
    theirs = dict(reference.decoder.named_parameters())
    assert torch.equal(ours["layers.1.fc2.weight"], theirs["model.decoder.layers.1.fc2.weight"])
    assert torch.equal(ours["lm_heads.3.weight"], theirs["lm_heads.3.weight"])
    codes = musicgen.generate(musicgen.encode_text(["soft pads"]), 8, seed=0)
    assert codes.shape == (1, 4, 8) and int(codes.min()) >= 0 and int(codes.max()) < 2048
    assert musicgen.decode_audio(codes).shape == (1, 8 * 640)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_a_checkpoint_saved_in_half_precision_loads_and_plays(dtype, tmp_path):
    """Fine-tunes are often shared after `.to(torch.bfloat16)`: the decoder, T5 (and its
    projection) and EnCodec all load from the file's dtype and run together."""
    from expotion_live.testing.random_musicgen import save_random_musicgen

    model_dir = save_random_musicgen(tmp_path / "half", preset="tiny", seed=0, dtype=dtype)
    reference = MusicgenForConditionalGeneration.from_pretrained(model_dir, torch_dtype=dtype)
    assert reference.decoder.lm_heads[0].weight.dtype == dtype            # the file really holds half floats
    musicgen = MusicGen.load(model_dir, precision="fp32")
    ours = dict(musicgen.decoder.named_parameters())
    assert torch.equal(ours["lm_heads.3.weight"], reference.decoder.lm_heads[3].weight.float())
    codes = musicgen.generate(musicgen.encode_text(["soft pads"]), 8, seed=0)
    assert codes.shape == (1, 4, 8) and int(codes.min()) >= 0 and int(codes.max()) < 2048
    audio = musicgen.decode_audio(codes)
    assert audio.shape == (1, 8 * 640) and np.isfinite(audio).all()
    default = MusicGen.load(model_dir)                                      # this CPU's default precision
    assert default.generate(default.encode_text(["soft pads"]), 8, seed=0).shape == (1, 4, 8)


def test_sharded_checkpoint_loads_the_same_weights(tiny_musicgen_dir, tmp_path):
    reference = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen_dir)
    reference.save_pretrained(tmp_path, max_shard_size="1MB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    sharded = load_decoder(tmp_path)
    single = load_decoder(tiny_musicgen_dir)
    for (name, a), (_, b) in zip(sharded.state_dict().items(), single.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_directory_and_files(tmp_path, model_copy):
    with pytest.raises(CheckpointError, match="no such model directory"):
        MusicGen.load(tmp_path / "nowhere")
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_decoder(model_copy)
    (model_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_decoder(model_copy)


def test_broken_config_names_file_and_key(model_copy):
    (model_copy / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_decoder(model_copy)


@pytest.mark.parametrize("key, value, message", [
    ("audio_channels", 2, "decoder.audio_channels = 2 is not supported"),
    ("activation_function", "relu", "decoder.activation_function = 'relu' is not supported"),
    ("num_attention_heads", 5, "not divisible by decoder.num_attention_heads 5"),
])
def test_unsupported_config_is_refused(model_copy, key, value, message):
    edit_config(model_copy, lambda c: c["decoder"].__setitem__(key, value))
    with pytest.raises(CheckpointError, match=message) as err:
        load_decoder(model_copy)
    assert "config.json" in str(err.value)


def test_missing_key_in_config(model_copy):
    edit_config(model_copy, lambda c: c["decoder"].pop("ffn_dim"))
    with pytest.raises(CheckpointError, match=r"config\.json: missing key decoder\.ffn_dim"):
        load_decoder(model_copy)


def test_missing_weight_names_file_and_key(model_copy):
    edit_weights(model_copy, lambda t: t.pop("decoder.model.decoder.layers.1.fc1.weight"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing weight "
                                              r"decoder\.model\.decoder\.layers\.1\.fc1\.weight"):
        load_decoder(model_copy)


def test_wrong_shape_names_file_and_key(model_copy):
    def shrink(tensors):
        tensors["decoder.lm_heads.2.weight"] = tensors["decoder.lm_heads.2.weight"][:100].clone()

    edit_weights(model_copy, shrink)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weight decoder\.lm_heads\.2\.weight "
                                              r"has shape \(100, 64\), expected \(2048, 64\)"):
        load_decoder(model_copy)


def test_text_and_codec_weights_are_checked_too(model_copy):
    edit_weights(model_copy, lambda t: t.pop("enc_to_dec_proj.bias"))
    with pytest.raises(CheckpointError, match="missing weight enc_to_dec_proj.bias"):
        MusicGen.load(model_copy, precision="fp32")


def test_a_codec_off_the_50_hz_grid_is_a_clear_error(model_copy):
    """EnCodec 24 kHz (hop 320: 75 frames per second) would put codes off the features' frames."""
    edit_config(model_copy, lambda c: c["audio_encoder"].update(sampling_rate=24000, upsampling_ratios=[8, 5, 4, 2]))
    with pytest.raises(CheckpointError, match=r"audio_encoder makes 75 frames per second .* run on EnCodec's 50"):
        MusicGen.load(model_copy, precision="fp32")


def test_missing_tokenizer_is_a_clear_error(model_copy):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_copy / name).unlink()
    with pytest.raises(CheckpointError, match="missing the text tokenizer"):
        MusicGen.load(model_copy, precision="fp32")


def test_random_presets_have_the_musicgen_shapes():
    from expotion_live.testing.random_musicgen import _configs, save_random_musicgen

    small = _configs("small", text_vocab_size=1000)
    decoder, codec = small.decoder, small.audio_encoder
    assert (decoder.num_hidden_layers, decoder.hidden_size, decoder.num_attention_heads, decoder.ffn_dim) == \
        (24, 1024, 16, 4096)  # musicgen-small
    assert small.text_encoder.d_model == 768 and small.text_encoder.num_layers == 12  # t5-base
    assert (codec.sampling_rate, codec.hop_length, codec.num_quantizers, codec.codebook_size) == (32000, 640, 4, 2048)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        save_random_musicgen("unused", preset="huge")

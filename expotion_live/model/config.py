"""The decoder's configuration, read from a transformers-format `config.json`.

Only what our decoder needs is kept; anything in the file that would change the math
in a way we do not implement (stereo, another activation, cross-attention width) is
refused with an error naming the file and the key, rather than silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CheckpointError(ValueError):
    """A model directory we cannot use; the message names the file and the key."""


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 2048              # entries per EnCodec codebook (the LM heads' width)
    num_codebooks: int = 4              # parallel token streams, one per residual quantiser
    hidden_size: int = 1024             # model width d
    num_hidden_layers: int = 24         # transformer layers
    num_attention_heads: int = 16       # heads per attention; head_dim = hidden_size // heads
    ffn_dim: int = 4096                 # feed-forward inner width
    max_position_embeddings: int = 2048  # longest sequence the sinusoidal table covers (~40 s)
    pad_token_id: int = 2048            # delay-pattern pad and decoder start token (one past the codebook)
    scale_embedding: bool = False       # multiply summed code embeddings by sqrt(d) (off in every hub model)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, decoder: dict, source: str | Path = "config.json") -> "DecoderConfig":
        """Build from the `decoder` section of a MusicGen `config.json` (or a decoder-only config)."""
        def get(key, default=None):
            if key not in decoder and default is None:
                raise CheckpointError(f"{source}: missing key decoder.{key}")
            return decoder.get(key, default)

        unsupported = {
            "audio_channels": (1, "stereo MusicGen models are not supported"),
            "activation_function": ("gelu", "only the exact GELU feed-forward is implemented"),
        }
        for key, (expected, why) in unsupported.items():
            if decoder.get(key, expected) != expected:
                raise CheckpointError(f"{source}: decoder.{key} = {decoder[key]!r} is not supported ({why})")
        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        if hidden % heads:
            raise CheckpointError(f"{source}: decoder.hidden_size {hidden} is not divisible by "
                                  f"decoder.num_attention_heads {heads}")
        cross = decoder.get("cross_attention_hidden_size")
        if cross is not None and cross != hidden:
            raise CheckpointError(f"{source}: decoder.cross_attention_hidden_size = {cross} is not supported "
                                  f"(cross-attention must run at hidden_size {hidden})")
        pad = decoder.get("pad_token_id")
        vocab = int(get("vocab_size"))
        if pad is not None and pad != vocab:
            raise CheckpointError(f"{source}: decoder.pad_token_id = {pad} is not supported "
                                  f"(MusicGen pads with vocab_size = {vocab})")
        return cls(
            vocab_size=vocab,
            num_codebooks=int(get("num_codebooks")),
            hidden_size=hidden,
            num_hidden_layers=int(get("num_hidden_layers")),
            num_attention_heads=heads,
            ffn_dim=int(get("ffn_dim")),
            max_position_embeddings=int(get("max_position_embeddings", 2048)),
            pad_token_id=vocab,
            scale_embedding=bool(decoder.get("scale_embedding", False)),
        )

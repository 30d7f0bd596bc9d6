"""Read a MusicGen directory in the transformers / hub format into our modules.

The layout is what `MusicgenForConditionalGeneration.save_pretrained` writes and what
`facebook/musicgen-{small,medium,large}` hold: `config.json`, `model.safetensors` or
sharded `model-*.safetensors` with `model.safetensors.index.json`, and the tokenizer
files. A decoder-only directory (`MusicgenForCausalLM.save_pretrained`) loads too.
Every failure is a `CheckpointError` naming the file and the key, a NaN or infinite weight
in any of the networks (decoder, T5, EnCodec) included.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..features.schema import FRAME_RATE
from .config import CheckpointError, DecoderConfig
from .decoder import MusicGenDecoder

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


@dataclass(frozen=True)
class Checkpoint:
    """A model directory's parsed config and which safetensors file holds each tensor."""

    model_dir: Path
    config: dict                    # the whole config.json
    decoder_config: dict            # its decoder section (or the whole file for a decoder-only save)
    decoder_prefix: str             # "decoder." in a full MusicGen save, "" in a decoder-only one
    tensor_files: dict[str, Path]   # key -> safetensors file holding it


def open_checkpoint(model_dir: str | os.PathLike) -> Checkpoint:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: no such model directory (download one with "
                              f"`expotion-live download small`)")
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: missing (not a transformers MusicGen directory)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: not valid JSON: {err}") from None
    model_type = config.get("model_type")
    if model_type == "musicgen":
        if "decoder" not in config:
            raise CheckpointError(f"{config_path}: missing key decoder")
        decoder_config, prefix = config["decoder"], "decoder."
    elif model_type == "musicgen_decoder":
        decoder_config, prefix = config, ""
    else:
        raise CheckpointError(f"{config_path}: model_type = {model_type!r} is not supported "
                              f"(expected 'musicgen' or 'musicgen_decoder')")
    return Checkpoint(model_dir, config, decoder_config, prefix, _tensor_files(model_dir))


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    from safetensors import SafetensorError, safe_open

    index_path = model_dir / SHARD_INDEX
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index_path}: not a safetensors shard index ({err})") from None
        files = {key: model_dir / name for key, name in weight_map.items()}
        for path in set(files.values()):
            if not path.exists():
                raise CheckpointError(f"{path}: missing (listed in {SHARD_INDEX})")
        return files
    path = model_dir / SINGLE_FILE
    if not path.exists():
        others = sorted(p.name for p in model_dir.glob("*.bin"))
        hint = f" (found {', '.join(others)}: only safetensors weights are read)" if others else ""
        raise CheckpointError(f"{path}: missing{hint}")
    try:
        with safe_open(path, framework="pt") as f:
            return {key: path for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def load_state_exact(module: nn.Module, ckpt: Checkpoint, candidates: Callable[[str], Sequence[str]],
                     assign: bool = False, device=None, dtype: torch.dtype | None = None) -> None:
    """Load every tensor `module` expects, naming the checkpoint file and key on a missing, misshapen or
    non-finite weight (NaN would surface only deep inside sampling or as NaN audio).

    `candidates(key)` lists the checkpoint keys that may hold the module's `key`, best
    first (older saves name weight-norm tensors `weight_g`/`weight_v`; T5 ties weights).
    `assign` makes the read tensors the module's own (for a module built on the meta device).
    Each floating tensor is cast as it is read, to `dtype` or else the module's own dtype
    (a checkpoint saved in bf16 or fp16 loads like an fp32 one), and put on `device`:
    one tensor at a time, so the device never holds a copy in the file's precision.
    """
    from safetensors import safe_open

    state = {}
    with contextlib.ExitStack() as files:
        opened = {}
        for key, tensor in module.state_dict().items():
            names = candidates(key)
            found = next((name for name in names if name in ckpt.tensor_files), None)
            if found is None:
                raise CheckpointError(f"{_file_of(ckpt)}: missing weight {names[0]}")
            path = ckpt.tensor_files[found]
            if path not in opened:
                opened[path] = files.enter_context(safe_open(path, framework="pt"))
            with _stop_signals_held():
                value = opened[path].get_tensor(found)
            if value.shape != tensor.shape:
                raise CheckpointError(f"{path}: weight {found} has shape {tuple(value.shape)}, "
                                      f"expected {tuple(tensor.shape)} from config.json")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise CheckpointError(f"{path}: weight {found} holds NaN or infinite values (the file is "
                                      f"damaged); download or copy the model folder again")
            if value.is_floating_point():
                value = value.to(device=device, dtype=dtype or tensor.dtype)
            state[key] = value
    module.load_state_dict(state, strict=True, assign=assign)


@contextlib.contextmanager
def _stop_signals_held():
    """Hold Ctrl-C, SIGTERM and SIGHUP during a tensor read: raised inside torch's C++ code, their
    KeyboardInterrupt comes out as an unrelated ValueError; held, it arrives right after the read."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _file_of(ckpt: Checkpoint) -> Path:
    """The file a missing weight should be in."""
    index = ckpt.model_dir / SHARD_INDEX
    return index if index.exists() else ckpt.model_dir / SINGLE_FILE


def load_decoder(model_dir: str | os.PathLike | Checkpoint, device="cpu",
                 dtype: torch.dtype = torch.float32) -> MusicGenDecoder:
    """Our decoder with the directory's weights in `dtype` on `device` (frozen, eval mode)."""
    ckpt = model_dir if isinstance(model_dir, Checkpoint) else open_checkpoint(model_dir)
    config = DecoderConfig.from_hf(ckpt.decoder_config, ckpt.model_dir / "config.json")
    with torch.device("meta"):  # no random init of weights about to be replaced (seconds at full size)
        decoder = MusicGenDecoder(config)
    prefix = ckpt.decoder_prefix

    def candidates(key: str) -> list[str]:
        # transformers nests the transformer under model.decoder and keeps the LM heads beside it
        return [prefix + (key if key.startswith("lm_heads.") else "model.decoder." + key)]

    load_state_exact(decoder, ckpt, candidates, assign=True, device=device, dtype=dtype)
    return decoder.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _sub_config(ckpt: Checkpoint, key: str, model_type: str):
    from transformers import AutoConfig

    section = ckpt.config.get(key)
    if not isinstance(section, dict):
        raise CheckpointError(f"{ckpt.model_dir / 'config.json'}: missing key {key} "
                              f"(a decoder-only directory has no {key})")
    if section.get("model_type") != model_type:
        raise CheckpointError(f"{ckpt.model_dir / 'config.json'}: {key}.model_type = "
                              f"{section.get('model_type')!r} is not supported (expected {model_type!r})")
    fields = {k: v for k, v in section.items() if k != "model_type"}
    return AutoConfig.for_model(model_type, **fields)


def load_text_encoder(ckpt: Checkpoint, device="cpu"):
    """The tokenizer, frozen T5 encoder and `enc_to_dec_proj` from a full MusicGen directory."""
    from transformers import AutoTokenizer, T5EncoderModel

    from .text import TextEncoder

    t5_config = _sub_config(ckpt, "text_encoder", "t5")
    if not any((ckpt.model_dir / name).is_file() for name in TOKENIZER_FILES):
        # transformers would silently build an empty-vocabulary T5 tokenizer from config.json
        raise CheckpointError(f"{ckpt.model_dir}: missing the text tokenizer ({' or '.join(TOKENIZER_FILES)}, "
                              f"as MusicgenProcessor.save_pretrained writes them)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt.model_dir)
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{ckpt.model_dir}: cannot load the text tokenizer (tokenizer.json / spiece.model "
                              f"as MusicgenProcessor.save_pretrained writes them): {err}") from None
    with torch.device("meta"):  # T5 has no non-persistent buffers: every tensor comes from the file
        t5 = T5EncoderModel(t5_config)
    tied = {"encoder.embed_tokens.weight": "shared.weight"}  # T5 ties its input embedding to `shared`
    load_state_exact(t5, ckpt, lambda key: ["text_encoder." + key] + (["text_encoder." + tied[key]]
                                                                      if key in tied else []), assign=True)
    decoder_width = int(ckpt.decoder_config["hidden_size"])
    projection = None
    if t5_config.d_model != decoder_width:
        projection = nn.Linear(t5_config.d_model, decoder_width)
        load_state_exact(projection, ckpt, lambda key: ["enc_to_dec_proj." + key])
    return TextEncoder(tokenizer, t5, projection).to(device)


def load_codec(ckpt: Checkpoint, device="cpu"):
    """The frozen EnCodec model from a full MusicGen directory, whose frames must fall on the timeline's grid."""
    from transformers import EncodecModel

    from .codec import Codec

    codec_config = _sub_config(ckpt, "audio_encoder", "encodec")
    rate, hop = codec_config.sampling_rate, codec_config.hop_length
    if rate != hop * FRAME_RATE:
        raise CheckpointError(f"{ckpt.model_dir / 'config.json'}: audio_encoder makes {rate / hop:g} frames per "
                              f"second (sampling_rate {rate} / hop {hop}); the timeline, the adaptor and the engine "
                              f"run on EnCodec's {FRAME_RATE} (MusicGen's 32 kHz codec)")
    model = EncodecModel(codec_config)
    load_state_exact(model, ckpt, _codec_candidates)
    return Codec(model).to(device)


def _codec_candidates(key: str) -> list[str]:
    """Current weight-norm names first, then the `weight_g` / `weight_v` of older saves (the hub's)."""
    old = key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v")
    return ["audio_encoder." + key] + (["audio_encoder." + old] if old != key else [])

"""The frozen EnCodec codec: codes <-> 32 kHz audio, one frame per 640 samples.

Decoding turns generated codes into sound; encoding turns training clips (and audio
prompts) into the codes the decoder learns on.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Bf16Recurrence(nn.Module):
    """An LSTM whose weights are kept in bf16, taking and returning fp32 (`forward` as nn.LSTM's).

    EnCodec's decoder LSTM runs one frame at a time at batch 1, so each frame reads its
    recurrent weights once: memory-bound, like the decoder's step, and half the bytes in
    bf16. Used on CPUs with native bf16 (oneDNN), where the audio stays within 1e-4 of fp32
    (tests/test_codec.py).
    """

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm.to(torch.bfloat16)

    def forward(self, x: torch.Tensor):
        out, state = self.lstm(x.to(self.lstm.weight_ih_l0.dtype))
        return out.to(x.dtype), state


def fold_weight_norm(module: nn.Module) -> None:
    """Replace weight-norm parametrizations by the weights they compute: a frozen model's weights never
    change, so recomputing g * v / ||v|| in every forward is work thrown away at every decode."""
    from torch.nn.utils import parametrize

    for m in module.modules():
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)


def bf16_recurrence_helps(device: torch.device) -> bool:
    """Whether the decoder's LSTM should run in bf16 here: a CPU with native bf16 matrix instructions."""
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class Codec(nn.Module):
    def __init__(self, encodec: nn.Module):
        super().__init__()
        fold_weight_norm(encodec)
        self.encodec = encodec.eval().requires_grad_(False)
        self._place_recurrence()
        config = encodec.config
        self.sample_rate: int = config.sampling_rate
        self.hop_length: int = config.hop_length
        self.num_codebooks: int = config.num_quantizers
        self.bandwidth: float = max(config.target_bandwidths)

    @property
    def device(self) -> torch.device:
        return next(self.encodec.parameters()).device

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._place_recurrence()
        return self

    def _place_recurrence(self) -> None:
        """The decoder's LSTM in bf16 where that helps (see `Bf16Recurrence`), in fp32 elsewhere."""
        wanted = bf16_recurrence_helps(self.device)
        for layer in self.encodec.decoder.layers:
            lstm = getattr(layer, "lstm", None)
            if lstm is None:
                continue
            if wanted and isinstance(lstm, nn.LSTM):
                layer.lstm = Bf16Recurrence(lstm)
            elif not wanted and isinstance(lstm, Bf16Recurrence):
                layer.lstm = lstm.lstm.float()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """codes (B, K, T) -> mono float32 audio (B, T * hop_length)."""
        B, K, T = codes.shape
        if K != self.num_codebooks:
            raise ValueError(f"codes have {K} codebooks, the codec expects {self.num_codebooks}")
        frames = codes.to(self.device)[None]  # (1 chunk, B, K, T)
        audio = self.encodec.decode(frames, [None]).audio_values  # (B, 1, N)
        return audio[:, 0, :T * self.hop_length].float().cpu().numpy()

    @torch.no_grad()
    def encode(self, audio: np.ndarray | torch.Tensor) -> torch.LongTensor:
        """Mono audio (B, N) at `sample_rate` -> codes (B, K, ceil(N / hop_length))."""
        audio = torch.as_tensor(audio, dtype=torch.float32, device=self.device)
        if audio.ndim != 2:
            raise ValueError(f"expected mono audio of shape (batch, samples), got {tuple(audio.shape)}")
        codes = self.encodec.encode(audio[:, None, :], bandwidth=self.bandwidth).audio_codes  # (1, B, K, T)
        return codes[0]

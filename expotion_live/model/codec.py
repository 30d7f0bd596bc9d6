"""The frozen EnCodec codec: codes <-> 32 kHz audio, one frame per 640 samples.

Decoding turns generated codes into sound; encoding turns training clips (and audio
prompts) into the codes the decoder learns on.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Codec(nn.Module):
    def __init__(self, encodec: nn.Module):
        super().__init__()
        self.encodec = encodec.eval().requires_grad_(False)
        config = encodec.config
        self.sample_rate: int = config.sampling_rate
        self.hop_length: int = config.hop_length
        self.num_codebooks: int = config.num_quantizers
        self.bandwidth: float = max(config.target_bandwidths)

    @property
    def device(self) -> torch.device:
        return next(self.encodec.parameters()).device

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

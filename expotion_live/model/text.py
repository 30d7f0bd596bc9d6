"""The frozen T5 text encoder, loaded from the same MusicGen directory.

A prompt becomes a `TextCondition`: T5's last hidden states projected to the decoder
width (`enc_to_dec_proj`, when the widths differ) and zeroed at padding, with the
padding mask the decoder's cross-attention uses. The "null" condition for
classifier-free guidance is all zeros with an all-false mask, as in transformers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TextCondition:
    """What the decoder's cross-attention reads: (B, S, D) hidden states and their (B, S) mask."""

    hidden: torch.Tensor  # (B, S, D) decoder width, zero where mask is False
    mask: torch.Tensor    # (B, S) bool, True = a real token

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    def with_null(self) -> "TextCondition":
        """The CFG batch of two: [conditional; null], null = zeros with nothing attended."""
        return TextCondition(torch.cat([self.hidden, torch.zeros_like(self.hidden)]),
                             torch.cat([self.mask, torch.zeros_like(self.mask)]))

    def to(self, device) -> "TextCondition":
        return TextCondition(self.hidden.to(device), self.mask.to(device))


class TextEncoder(nn.Module):
    """Tokenizer + frozen T5 encoder + the checkpoint's projection to the decoder width."""

    def __init__(self, tokenizer, t5: nn.Module, projection: nn.Module | None):
        super().__init__()
        self.tokenizer = tokenizer
        self.t5 = t5.eval().requires_grad_(False)
        self.projection = projection.requires_grad_(False) if projection is not None else nn.Identity()

    @property
    def device(self) -> torch.device:
        return next(self.t5.parameters()).device

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> TextCondition:
        if isinstance(prompts, str) or not prompts:
            raise ValueError("encode_text takes a non-empty list of prompt strings")
        tokens = self.tokenizer(list(prompts), padding=True, return_tensors="pt").to(self.device)
        hidden = self.t5(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        mask = tokens.attention_mask.bool()
        hidden = self.projection(hidden) * mask[..., None]  # (B, S, D) decoder width
        return TextCondition(hidden, mask)

"""MusicGen's delay pattern over the codebooks, as index tensors.

Codebook k is delayed by k steps, so at one decoder step the model predicts frame t of
codebook 0, frame t-1 of codebook 1, ... in parallel, and each codebook's frame t is
predicted after the coarser codebooks' frame t is known. Sequence position 0 is the
start token; codebook k at position p holds frame p-1-k, or the pad token P where
that frame does not exist. Worked example, K=3 codebooks, T=3 frames (a..c, A..C, x..z),
sequence length T+K = 6:

    position:    0  1  2  3  4  5
    codebook 0:  P  a  b  c  P  P
    codebook 1:  P  P  A  B  C  P
    codebook 2:  P  P  P  x  y  z

The logits at position p predict the tokens at position p+1. Frames not known yet
(to be generated) are marked UNKNOWN in a delayed sequence; generation fills exactly
those places and leaves pads and prompt frames untouched. This is the same layout as
transformers' `build_delay_pattern_mask` (mono).
"""
from __future__ import annotations

import torch

UNKNOWN = -1  # a place in a delayed sequence that generation must fill


class DelayPattern:
    """Index tensors for `n_frames` frames over `num_codebooks` codebooks, built once per length."""

    def __init__(self, num_codebooks: int, n_frames: int, pad_token_id: int, device="cpu"):
        self.num_codebooks = num_codebooks
        self.n_frames = n_frames
        self.pad_token_id = pad_token_id
        self.length = n_frames + num_codebooks  # start token + frames + (K-1) closing steps
        K = num_codebooks
        codebooks = torch.arange(K, device=device)
        # position_index[k, t] = t+1+k: where frame t of codebook k sits (K, T)
        self.position_index = torch.arange(n_frames, device=device)[None, :] + 1 + codebooks[:, None]

    def build(self, prompt_codes: torch.Tensor) -> torch.LongTensor:
        """Delay `prompt_codes` (B, K, P) with P <= n_frames into a (B, K, S) sequence.

        Prompt frames are placed, pads set, and every later frame marked UNKNOWN.
        """
        B, K, P = prompt_codes.shape
        if K != self.num_codebooks or P > self.n_frames:
            raise ValueError(f"prompt codes of shape {tuple(prompt_codes.shape)} do not fit "
                             f"{self.num_codebooks} codebooks x {self.n_frames} frames")
        frames = torch.full((B, K, self.n_frames), UNKNOWN, dtype=torch.long, device=prompt_codes.device)
        frames[:, :, :P] = prompt_codes
        seq = torch.full((B, K, self.length), self.pad_token_id, dtype=torch.long, device=prompt_codes.device)
        seq.scatter_(2, self.position_index.expand(B, K, self.n_frames), frames)
        return seq

    def undo(self, seq: torch.Tensor) -> torch.LongTensor:
        """Recover the (B, K, n_frames) frames from a delayed (B, K, S) sequence."""
        B, K, S = seq.shape
        return seq.gather(2, self.position_index.expand(B, K, self.n_frames))

    def prefill_length(self, n_prompt_frames: int) -> int:
        """Positions fed before the first generated token: the start token plus the prompt frames.

        Codebook 0 at position P+1 is the first UNKNOWN place, predicted by the logits at position P.
        """
        return n_prompt_frames + 1

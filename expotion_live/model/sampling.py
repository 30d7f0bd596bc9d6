"""Next-token choice: classifier-free guidance, then temperature, top-k, top-p, as transformers orders them.

All shapes are static (masking, never slicing by a data-dependent length), and the
randomness comes from an explicit `torch.Generator`, so a seed reproduces a piece.
"""
from __future__ import annotations

import torch


def guide(logits: torch.Tensor, cfg: float) -> torch.Tensor:
    """Classifier-free guidance over the batch of two [conditional; null]: (2B, K, V) -> (B, K, V).

    uncond + cfg * (cond - uncond), transformers' `ClassifierFreeGuidanceLogitsProcessor`.
    """
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + (cond - uncond) * cfg


def filter_logits(logits: torch.Tensor, *, temperature: float | torch.Tensor = 1.0, top_k: int = 0,
                  top_p: float = 0.0) -> torch.Tensor:
    """Temperature, then keep the top-k, then the top-p nucleus; dropped tokens become -inf. (..., V)."""
    V = logits.shape[-1]
    logits = logits.float() / temperature
    if 0 < top_k < V:
        kth_best = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if 0.0 < top_p < 1.0:
        ascending, order = logits.sort(dim=-1)
        mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)  # probability of this token and all less likely
        drop = mass_below <= 1.0 - top_p
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
           greedy: bool = False, generator: torch.Generator | None = None) -> torch.LongTensor:
    """Pick one token per row: logits (B, K, V) -> tokens (B, K).

    top_k = 0 and top_p = 0 switch those filters off; greedy takes the argmax.
    """
    if greedy:
        return logits.argmax(dim=-1)
    B, K, V = logits.shape
    if 0 < top_k < V and not 0.0 < top_p < 1.0:
        # Only the k best can be drawn, so draw among them: a softmax and k random numbers per
        # row instead of V, run at every step. Unlike the mask in `filter_logits`, ties with the
        # k-th best beyond k are left out.
        best, index = logits.float().topk(top_k, dim=-1)  # (B, K, k) each
        probs = (best / temperature).softmax(dim=-1).view(B * K, top_k)
        choice = torch.multinomial(probs, 1, generator=generator).view(B, K, 1)
        return index.gather(-1, choice).view(B, K)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    probs = filtered.softmax(dim=-1).view(B * K, V)  # (B*K, V)
    return torch.multinomial(probs, 1, generator=generator).view(B, K)


def noise_width(vocab_size: int, top_k: int, top_p: float) -> int:
    """How many Gumbel numbers `sample_with_noise` reads per row: k when only top-k filters, else V."""
    return top_k if 0 < top_k < vocab_size and not 0.0 < top_p < 1.0 else vocab_size


def fill_gumbel(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill `out` in place with standard Gumbel numbers -log(-log u): argmax(logits + g) draws from softmax(logits)."""
    out.uniform_(generator=generator).clamp_(1e-20, 1.0 - 1e-7)
    return out.log_().neg_().log_().neg_()


def sample_with_noise(logits: torch.Tensor, noise: torch.Tensor, temperature: torch.Tensor, *, top_k: int,
                      top_p: float, greedy: bool) -> torch.LongTensor:
    """The same choice as `sample`, with its randomness given: logits (B, K, V), noise (B, K, noise_width).

    Gumbel-max over the filtered, tempered logits: a draw from the same distribution, with
    no host synchronisation, no data-dependent shape and the random numbers made outside,
    so the step that calls it can be captured once and replayed (a CUDA graph).
    `temperature` is a 0-d tensor, so changing it needs no new capture.
    """
    if greedy:
        return logits.argmax(dim=-1)
    V = logits.shape[-1]
    if noise.shape[-1] < V:   # top-k only: draw among the k best (see `sample`)
        best, index = logits.float().topk(noise.shape[-1], dim=-1)   # (B, K, k)
        choice = (best / temperature + noise).argmax(dim=-1, keepdim=True)
        return index.gather(-1, choice)[..., 0]
    return (filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p) + noise).argmax(dim=-1)

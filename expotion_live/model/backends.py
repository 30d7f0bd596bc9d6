"""The body of a decoding step, chosen once per decoder placement.

`MusicGenDecoder.decode_step` embeds the codes, runs its `backend` over the layers and
reads the logits. Which backend fits is a fact of the decoder's device, dtype and
projections, so it is decided when those are set (`MusicGenDecoder.choose_backend`,
called when the decoder is built, moved or cast, which `precision.apply_precision`
always ends with), never inside a step:

- "int8-numba"   every projection `Int8Linear` without bias, fp32 on the CPU: a layer is
                 two numba calls on numpy views of the weights and the cache (`int8_step`).
- "int4-numba"   the same with every projection `Int4Linear` without bias.
- "cpu-modules"  any other fp32 decoder on the CPU: the decoder's modules, attention by
                 our one-query kernel (`attention.decode_attention`).
- "fused-gpu"    plain bias-free `nn.Linear` projections on CUDA: the same math in fewer,
                 larger kernels (`gpu_step`), which `stream.GraphSteps` captures.
- "modules"      anything else (a decoder cast to bf16, int8 on a GPU) and any step that
                 is traced (`torch.compile`; numba is opaque to it): the decoder's modules
                 with SDPA, the reference the others are tested against.

A backend also fixes the KV cache's memory order (`position_major`: the layout its
attention reads without a copy) and says whether its step can be captured as a CUDA
graph (`cuda_graphs`). The numba kernels compute no gradient: decoding is inference,
training runs `MusicGenDecoder.forward`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import Attend, decode_attention, fused_attention
from .gpu_step import FusedDecodeStep
from .int8_step import QuantizedDecodeStep
from .precision import Bf16Linear, Int4Linear, Int8Linear

NAMES = ("int8-numba", "int4-numba", "cpu-modules", "fused-gpu", "modules")


class ModulesStep:
    """`decode_step`'s layers as the decoder's own modules, attention by `attention`."""

    def __init__(self, name: str, layers: Sequence[nn.Module], attention: Attend, position_major: bool,
                 cuda_graphs: bool):
        self.name, self.layers, self.attention = name, layers, attention
        self.position_major, self.cuda_graphs = position_major, cuda_graphs

    def __call__(self, x: torch.Tensor, position: torch.Tensor, cache, adapters: Sequence,
                 attend_length: int) -> torch.Tensor:
        """x (M, 1, D) at `position` -> (M, 1, D) after every layer, attending over `attend_length` positions."""
        self_bias = cache.step_bias(position, attend_length)   # (1, attend_length)
        has_text = cache.cross_k is not None
        for i, (layer, adapter) in enumerate(zip(self.layers, adapters)):
            cross = (cache.cross_k[i], cache.cross_v[i], cache.cross_bias) if has_text else None
            x = layer(x, position, self_bias, cross, self.attention, adapter,
                      self_kv=(cache.self_k[i], cache.self_v[i]))
        return x


def _projections(decoder: nn.Module) -> list[nn.Module]:
    return [m for layer in decoder.layers for m in layer.modules()
            if isinstance(m, (nn.Linear, Bf16Linear, Int8Linear, Int4Linear))]


def _all_of(decoder: nn.Module, kind: type) -> bool:
    projections = _projections(decoder)
    return bool(projections) and all(type(m) is kind and m.bias is None for m in projections)


def _why_not(name: str, decoder: nn.Module) -> str | None:
    """None when backend `name` can run this decoder, else what stands in its way."""
    device, dtype = decoder.positions_table.device.type, decoder.dtype
    fp32_cpu = device == "cpu" and dtype == torch.float32
    if name == "int8-numba" and not (fp32_cpu and _all_of(decoder, Int8Linear)):
        return "it needs an fp32 decoder on the CPU whose projections are all Int8Linear without bias"
    if name == "int4-numba" and not (fp32_cpu and _all_of(decoder, Int4Linear)):
        return "it needs an fp32 decoder on the CPU whose projections are all Int4Linear without bias"
    if name == "cpu-modules" and not fp32_cpu:
        return "it needs an fp32 decoder on the CPU"
    if name == "fused-gpu" and not _all_of(decoder, nn.Linear):
        return "it needs every projection a plain nn.Linear without bias (fp32 or a GPU's bf16)"
    return None


def preferred(device: torch.device) -> tuple[str, ...]:
    """The backends worth running on this device, fastest first; "modules" runs anywhere."""
    if device.type == "cpu":
        return "int8-numba", "int4-numba", "cpu-modules", "modules"
    if device.type == "cuda":
        return "fused-gpu", "modules"
    return ("modules",)


def choose(decoder: nn.Module, name: str | None = None) -> str:
    """`name` if that backend can run this decoder (else a ValueError saying why), or with None
    the first of `preferred` that can."""
    if name is None:
        return next(n for n in preferred(decoder.positions_table.device) if _why_not(n, decoder) is None)
    if name not in NAMES:
        raise ValueError(f"unknown decode backend {name!r}; choose one of {', '.join(NAMES)}")
    if (why := _why_not(name, decoder)) is not None:
        raise ValueError(f"decode backend {name!r} cannot run this decoder "
                         f"({decoder.dtype} on {decoder.positions_table.device}): {why}")
    return name


def build(decoder: nn.Module, name: str):
    """Backend `name` (one `choose` returned) bound to this decoder's current weights."""
    cuda = decoder.positions_table.device.type == "cuda"
    if name in ("int8-numba", "int4-numba"):
        return QuantizedDecodeStep(name, decoder.layers)
    if name == "fused-gpu":
        return FusedDecodeStep(decoder.layers, cuda_graphs=cuda)
    if name == "cpu-modules":
        return ModulesStep(name, decoder.layers, decode_attention, position_major=True, cuda_graphs=False)
    return ModulesStep(name, decoder.layers, fused_attention, position_major=False, cuda_graphs=cuda)

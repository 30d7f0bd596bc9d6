"""Weight precision of the decoder's projections: the biggest speed lever on a CPU.

Decoding one step (batch 2 with CFG, one position) multiplies a couple of rows by
every projection matrix, so its time is the bytes of weights read over the memory
bandwidth. Storing them in fewer bytes is what makes it fast:

- "fp32"  plain `nn.Linear`, the reference (and what training the adaptor needs).
- "bf16"  `Bf16Linear`: bfloat16 weights (2 bytes), activations cast to bf16 around the
          matmul; oneDNN's bf16 kernels (AVX512-BF16 / AMX where the CPU has them).
- "int8"  `Int8Linear`: int8 weights (1 byte) with one fp32 scale per output row
          (symmetric, per channel). For a few rows on the CPU our own numba kernel
          `cpu_kernels.int8_rows` streams the weights once with fp32 activations (a
          whole decoding step of an int8 decoder runs its layers in numba: the
          "int8-numba" backend, `int8_step`); for many rows (a prefill), off the CPU, and
          whenever a gradient is needed, the int8 weight is converted per call for one
          ordinary matmul and the scales applied to its output.
- "int4"  `Int4Linear`: int4 weights (half a byte) with one fp32 scale per group of
          `_INT4_GROUP` input columns of each output row (symmetric); our kernel
          `cpu_kernels.int4_rows` for a few rows (the "int4-numba" backend runs whole
          steps), a dequantized bf16 matmul otherwise, as int8. A step reads a little over
          half of int8's bytes; the price is a larger logit error (`LOGIT_TOLERANCE`,
          and `bench quality` on real weights).

Only the projections change; layer norms, embeddings, attention and the KV cache
stay in the model's dtype (fp32), so the swap is invisible to callers: a module
still takes and returns fp32 tensors of the same shapes, and gradients still flow
to its input (the adaptor trains through the frozen layers).

Which kernels run on the CPU (seen with the torch profiler and ONEDNN_VERBOSE=1):
- fp32 `F.linear` runs MKL's sgemm (no oneDNN primitive), which streams weights slowly
  on AMD CPUs. oneDNN with prepacked weights is faster, but it keeps a second, opaque
  copy of every weight, and fp32 must stay the plain trainable reference.
- bf16 `F.linear` runs oneDNN's `brg_matmul` (AVX512-BF16 / AMX).
- int8 runs our `cpu_kernels.int8_rows` on one thread, whatever torch's thread count.
  Torch's stock int8 kernels were slower at two rows: fbgemm's
  `quantized::linear_dynamic` (activations quantized too; deprecated for torchao;
  raises on a NaN), ATen's `_weight_int8pack_mm` (bf16 activations), `torch._int_mm`
  and oneDNN's `qlinear_pointwise`; `bench/int8.py` compares the first two with ours.
bench/decode.py measures the whole decoder at each precision side by side.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels

PRECISIONS = ("fp32", "bf16", "int8", "int4")

# The int8 kernel reads each weight once per pair of rows, so its time grows with the rows;
# above this many, converting the weight to bf16 per call for one oneDNN matmul, whose time
# hardly grows with them, is faster (no bf16 copy is kept: that would add 2 bytes per weight).
_INT8_KERNEL_MAX_ROWS = 8

# Weight columns per block in the int8 layout: two rows of activations over this many columns
# (8 KB) stay in L1 while the weights stream past; unblocked, a wide projection's activations
# (fc2: 4096 columns, 32 KB for two rows) fall out of L1 and every weight load waits on them.
_INT8_BLOCK = 1024

# Input columns sharing one int4 scale: finer groups follow a row's local range more closely
# (int4 has only 15 levels) at 4 bytes of scale per group; at 64 the scales add an eighth to
# the half byte per weight.
_INT4_GROUP = 64

# Relative logit error ‖logits - logits_fp32‖ / ‖logits_fp32‖ each precision is held to.
# bench/decode.py prints each precision's error on random musicgen-small weights (its
# "logit err" column); these bounds sit above it with room to spare. Random weights are a
# weak judge of int8 quality (real checkpoints have outlier channels), so fp32 and bf16
# stay one flag away. tests/test_precision.py checks the bound on tiny random decoders,
# through both the full forward and prefill + decode_step.
LOGIT_TOLERANCE = {"fp32": 0.0, "bf16": 1e-2, "int8": 3e-2, "int4": 4e-1}


def logit_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """‖logits - reference‖ / ‖reference‖: the measure `LOGIT_TOLERANCE` bounds."""
    return ((logits.float() - reference.float()).norm() / reference.float().norm()).item()


def greedy_agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """The share of positions (every leading index, vocabulary last) whose most likely token is the reference's."""
    return (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()


def logit_kl(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean KL(reference || logits) in nats over the positions: how much of the reference's next-token
    distribution a precision loses, which an error norm over raw logits does not weigh."""
    log_p, log_q = reference.float().log_softmax(-1), logits.float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()


class Bf16Linear(nn.Module):
    """A projection whose weight is stored in bfloat16: half the bytes of fp32 to read."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(
            linear.bias.detach().to(torch.bfloat16), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def column_block(in_features: int) -> int:
    """Columns per weight block: the widest divisor of K up to _INT8_BLOCK (K itself when narrower)."""
    block = min(in_features, _INT8_BLOCK)
    while in_features % block:
        block -= 1
    return block


class Int8Linear(nn.Module):
    """A projection stored as int8 weights times one scale per output row.

    Quantization (symmetric, per output channel): scale_n = max_k |W_nk| / 127,
    W_nk ≈ scale_n * round(W_nk / scale_n), so y = (x W_int8^T) * scale.
    `weight` holds W_int8 (N, K) cut into column blocks, (K / B, N, B): each block is
    contiguous, so the kernel streams the weights in memory order (B = K up to 1024
    columns, where the layout is the plain (1, N, K)).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()                                   # (N, K)
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)  # (N,)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (N, K)
        B = column_block(self.in_features)
        blocks = q.view(self.out_features, self.in_features // B, B).transpose(0, 1).contiguous()  # (K/B, N, B)
        self.weight = nn.Parameter(blocks, requires_grad=False)
        self.weight_scale = nn.Parameter(scale, requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None   # numpy views for the kernel, see _int8_kernel

    def _apply(self, fn, recurse=True):
        self._arrays = None   # moved or cast: the views would point at the old storage
        return super()._apply(fn, recurse)

    def uses_int8_kernel(self, rows: torch.Tensor) -> bool:
        """Our kernel takes these rows: few of them, and `cpu_kernels.takes` them."""
        return rows.shape[0] <= _INT8_KERNEL_MAX_ROWS and cpu_kernels.takes(rows)

    def int8_weight(self) -> torch.Tensor:
        """W_int8 as the plain (N, K) matrix (a copy when the weight is blocked)."""
        return self.weight.transpose(0, 1).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, K = x.shape
        rows = x.reshape(-1, K)  # (M, K): every leading dimension flattened into rows
        if self.uses_int8_kernel(rows):
            y = self._int8_kernel(rows)
        else:  # y = (x W_int8^T) * scale: int8 values are exact in bf16; scaling the output spares a pass over W
            compute = torch.bfloat16 if x.device.type == "cpu" else x.dtype
            y = F.linear(rows.to(compute), self.int8_weight().to(compute)).to(x.dtype) * self.weight_scale.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)  # (..., N)

    def _int8_kernel(self, rows: torch.Tensor) -> torch.Tensor:
        """(M, K) -> (M, N) by `cpu_kernels.int8_rows`. Called once per projection and step on the torch
        path, so the frozen weight's numpy views are made once (they cost more than the call) and reused."""
        if self._arrays is None:
            self._arrays = (self.weight.detach().numpy(), self.weight_scale.detach().numpy())
        weight, scale = self._arrays
        n_blocks, _, block = weight.shape
        out = np.empty((rows.shape[0], self.out_features), np.float32)
        cpu_kernels.int8_rows(rows.detach().contiguous().numpy().reshape(-1, n_blocks, block), weight, scale, out)
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def int4_group(block: int) -> int:
    """Columns per int4 scale group: the widest even divisor of the column block up to _INT4_GROUP."""
    if block % 2:
        raise ValueError(f"int4 packs two weights a byte: {block} input columns per block is odd")
    group = min(block, _INT4_GROUP)
    while block % group or group % 2:
        group -= 1
    return group


class Int4Linear(nn.Module):
    """A projection stored as int4 weights times one scale per group of input columns of each row.

    Quantization (symmetric, per row and group of G columns): scale_ng = max |W_nk| / 7
    over the group, q_nk = round(W_nk / scale_ng) in -7..7, y = sum_g (x_g q_g^T) * scale_g.
    `weight` holds q + 8 two to a byte (uint8), cut into the column blocks of `Int8Linear`,
    (K / B, N, B / 2); within each group byte j holds column j (low nibble) and column
    j + G/2 (high nibble). `weight_scale` is (K / B, N, B / G).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        N, K = self.out_features, self.in_features
        B = column_block(K)
        G = int4_group(B)
        w = linear.weight.detach().float().reshape(N, K // G, G)                      # (N, groups, G)
        scale = (w.abs().amax(dim=2) / 7.0).clamp_min(torch.finfo(torch.float32).tiny)  # (N, groups)
        q = (torch.round(w / scale[..., None]).clamp(-7, 7) + 8).to(torch.uint8)    # (N, groups, G) in 1..15
        packed = q[..., :G // 2] | (q[..., G // 2:] << 4)                             # (N, groups, G/2)
        blocks = packed.reshape(N, K // B, B // 2).transpose(0, 1).contiguous()      # (K/B, N, B/2)
        self.weight = nn.Parameter(blocks, requires_grad=False)
        self.weight_scale = nn.Parameter(
            scale.reshape(N, K // B, B // G).transpose(0, 1).contiguous(), requires_grad=False)  # (K/B, N, B/G)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None   # numpy views for the kernel

    def _apply(self, fn, recurse=True):
        self._arrays = None   # moved or cast: the views would point at the old storage
        return super()._apply(fn, recurse)

    @property
    def group(self) -> int:
        n_blocks, _, groups = self.weight_scale.shape
        return self.in_features // (n_blocks * groups)

    def uses_int4_kernel(self, rows: torch.Tensor) -> bool:
        """Our kernel takes these rows: few of them, and `cpu_kernels.takes` them."""
        return rows.shape[0] <= _INT8_KERNEL_MAX_ROWS and cpu_kernels.takes(rows)

    def int4_weight(self) -> torch.Tensor:
        """q as the plain (N, K) int8 matrix of values in -7..7."""
        N, K, G = self.out_features, self.in_features, self.group
        packed = self.weight.transpose(0, 1).reshape(N, K // G, G // 2)             # (N, groups, G/2)
        q = torch.cat([packed & 15, packed >> 4], dim=2).to(torch.int8) - 8          # (N, groups, G)
        return q.reshape(N, K)

    def column_scales(self) -> torch.Tensor:
        """Each weight's scale, (N, K): its group's scale repeated over the group's columns."""
        N = self.out_features
        per_group = self.weight_scale.transpose(0, 1).reshape(N, -1)                # (N, groups)
        return per_group.repeat_interleave(self.group, dim=1)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.int4_weight().to(torch.float32) * self.column_scales().float()).to(dtype)  # (N, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, K = x.shape
        rows = x.reshape(-1, K)  # (M, K): every leading dimension flattened into rows
        if self.uses_int4_kernel(rows):
            y = self._int4_kernel(rows)
        else:  # the group scales vary along K, so they are folded into the weight before one matmul
            compute = torch.bfloat16 if x.device.type == "cpu" else x.dtype
            y = F.linear(rows.to(compute), self.dequantized_weight(compute)).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)  # (..., N)

    def _int4_kernel(self, rows: torch.Tensor) -> torch.Tensor:
        """(M, K) -> (M, N) by `cpu_kernels.int4_rows`, on numpy views made once (as `Int8Linear`)."""
        if self._arrays is None:
            self._arrays = (self.weight.detach().numpy(), self.weight_scale.detach().numpy())
        weight, scale = self._arrays
        n_blocks, _, half_block = weight.shape
        out = np.empty((rows.shape[0], self.out_features), np.float32)
        cpu_kernels.int4_rows(rows.detach().contiguous().numpy().reshape(-1, n_blocks, 2 * half_block), weight,
                              scale, out)
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"bias={self.bias is not None}")


_CONVERTERS = {"bf16": Bf16Linear, "int8": Int8Linear, "int4": Int4Linear}


def resolve_precision(precision: str, device) -> str:
    """"auto" -> `default_precision(device)`; anything unknown is a clear error."""
    if precision == "auto":
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of auto, {', '.join(PRECISIONS)}")
    return precision


def default_precision(device) -> str:
    """The fastest precision whose logits stay within LOGIT_TOLERANCE of fp32, per device.

    CPU: int8 (a step reads a quarter of fp32's bytes, and runs the "int8-numba" backend;
    `bench/decode.py` compares the precisions). CUDA: bf16 where the GPU has it, else
    fp32 (int8 on CUDA dequantizes per call, which saves memory but not time without a
    fused kernel). Anything else: fp32.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return "int8"
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def module_dtype(precision: str, device) -> torch.dtype:
    """The dtype of the whole decoder at this precision: bf16 off the CPU, where the whole decoder
    runs in it (norms, cache and activations too: a step's kernels read half the bytes and no
    casts are launched around each projection); fp32 elsewhere, where only projections change."""
    return torch.bfloat16 if precision == "bf16" and torch.device(device).type != "cpu" else torch.float32


def apply_precision(module: nn.Module, precision: str, device="cpu") -> nn.Module:
    """Move `module` to `device` and store its `nn.Linear` projections at `precision`, in place.

    Returns the same module. Converting is one-way (int8 cannot be made fp32 again
    without loss): a module already converted to another precision is an error; load
    the model again instead. It ends with a move (`module.to`), by which a
    `MusicGenDecoder` chooses its decode backend for the projections it now has.
    """
    precision = resolve_precision(precision, device)
    dtype = module_dtype(precision, device)
    if dtype != torch.float32:
        return module.to(device=device, dtype=dtype)
    module.to(device)
    converted = {type(m) for m in module.modules()} & {Bf16Linear, Int8Linear, Int4Linear}
    target = _CONVERTERS.get(precision)
    if converted - {target}:
        have = ", ".join(sorted(c.__name__ for c in converted))
        raise ValueError(f"this module's projections are already {have}; load the model again "
                         f"to use precision {precision!r}")
    if target is not None:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    setattr(parent, name, target(child))
    return module.to(device)   # again, after the swap: the decoder's backend must see the new projections


def projection_bytes(module: nn.Module) -> int:
    """Bytes of weights (and scales) held by `module`'s projections, at their stored precision."""
    total = 0
    for m in module.modules():
        if isinstance(m, (nn.Linear, Bf16Linear, Int8Linear, Int4Linear)):
            total += sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
    return total

"""Which int8 kernel reads a decoding step's weights fastest here: ours or torch's stock ones.

A decoding step multiplies two rows (the CFG batch) by every projection of the decoder.
This builds the 196 per-step projections of musicgen-small (24 layers of q, k, v, o of
self-attention, q, o of cross-attention, fc1, fc2; 4 LM heads) with random int8 weights
and one scale per row, and times one pass over all of them with each kernel, in
interleaved rounds so that a busy neighbour slows every kernel alike:

- ours: the projections of the "int8-numba" decode backend (`model.backends`), which an
  int8 decoder on the CPU runs: `cpu_kernels.int8_rows` on numpy views of each
  `Int8Linear`'s weights (`int8_step.projection_arrays`), fp32 activations;
- aten: `aten._weight_int8pack_mm`, ATen's weight-only int8 kernel (bf16 activations);
- fbgemm: `quantized::linear_dynamic`, activations quantized per call (the deprecated
  `quantize_dynamic` path).

It prints the median ms per step and the weight bytes read per second, beside the
bandwidth of reading one large tensor on as many threads.

    python bench/int8.py [--threads 1] [--rows 2] [--rounds 15] [--json out/bench_int8.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import write_json  # noqa: E402
from expotion_live.model import cpu_kernels  # noqa: E402
from expotion_live.model.int8_step import projection_arrays  # noqa: E402
from expotion_live.model.precision import Int8Linear  # noqa: E402

D, FFN, LAYERS, HEADS, VOCAB = 1024, 4096, 24, 4, 2048   # musicgen-small
SHAPES = [(D, D)] * 6 + [(FFN, D), (D, FFN)]             # (out, in) per layer, per step


def step_projections(seed: int = 0) -> list[Int8Linear]:
    torch.manual_seed(seed)
    shapes = SHAPES * LAYERS + [(VOCAB, D)] * HEADS
    return [Int8Linear(nn.Linear(k, n, bias=False)) for n, k in shapes]


def read_bandwidth(n_bytes: int = 512 << 20) -> float:
    """Bytes per second summing a tensor far larger than the caches."""
    data = torch.ones(n_bytes // 4)
    data.sum()
    times = []
    for _ in range(5):
        began = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - began)
    return n_bytes / statistics.median(times)


def kernels(projections: list[Int8Linear], rows: int) -> dict:
    """name -> a function running one step's products on rows x (M, K)."""
    aten = [(p.int8_weight().contiguous(), p.weight_scale.to(torch.bfloat16)) for p in projections]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # quantized tensors are deprecated (the point of the comparison)
        fbgemm = [torch.ops.quantized.linear_prepack(torch._make_per_channel_quantized_tensor(
            w, p.weight_scale.double(), torch.zeros(p.out_features, dtype=torch.long), 0), None)
            for p, (w, _) in zip(projections, aten)]

    arrays = [projection_arrays(p) for p in projections]   # made once, as the backend makes them per placement
    outs = {n: np.empty((rows, n), np.float32) for n in {p.out_features for p in projections}}

    def ours(xs):
        for p, (weight, scale) in zip(projections, arrays):
            n_blocks, _, block = weight.shape
            cpu_kernels.int8_rows(xs[p.in_features].numpy().reshape(-1, n_blocks, block), weight, scale,
                                  outs[p.out_features])

    def aten_int8pack(xs):
        for p, (w, s) in zip(projections, aten):
            torch.ops.aten._weight_int8pack_mm(xs[p.in_features].to(torch.bfloat16), w, s)

    def fbgemm_dynamic(xs):
        for p, packed in zip(projections, fbgemm):
            torch.ops.quantized.linear_dynamic(xs[p.in_features], packed, False)

    return {"ours (int8-numba)": ours, "aten _weight_int8pack_mm": aten_int8pack, "fbgemm linear_dynamic": fbgemm_dynamic}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench/int8.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (ours always uses one)")
    parser.add_argument("--rows", type=int, default=2, help="activation rows (2 = one prompt with CFG)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    projections = step_projections()
    n_bytes = sum(p.weight.numel() for p in projections)
    xs = {k: torch.randn(args.rows, k) for k in (D, FFN)}
    runs = kernels(projections, args.rows)
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for name, run in runs.items():
            run(xs)   # warm-up
        for _ in range(args.rounds):
            for name, run in runs.items():
                began = time.perf_counter()
                run(xs)
                times[name].append(time.perf_counter() - began)
    bandwidth = read_bandwidth()
    rows = [{"kernel": name, "ms_per_step": 1000 * statistics.median(t),
             "gb_s": n_bytes / statistics.median(t) / 1e9} for name, t in times.items()]
    print(f"\n{len(projections)} int8 projections ({n_bytes / 1e6:.0f} MB), {args.rows} rows, "
          f"{args.threads} threads, median of {args.rounds} interleaved rounds; "
          f"reading one large tensor: {bandwidth / 1e9:.1f} GB/s\n")
    print(f"{'kernel':<26} {'ms/step':>8} {'GB/s':>6} {'vs ours':>8}")
    for r in rows:
        print(f"{r['kernel']:<26} {r['ms_per_step']:>8.1f} {r['gb_s']:>6.1f} "
              f"{r['ms_per_step'] / rows[0]['ms_per_step']:>7.2f}x")
    if args.json:
        write_json(args.json, {"rows_per_step": args.rows, "threads": args.threads, "weight_mb": n_bytes / 1e6,
                               "read_bandwidth_gb_s": bandwidth / 1e9, "kernels": rows})
        print(f"\nwrote {args.json}")
    return rows


if __name__ == "__main__":
    main()

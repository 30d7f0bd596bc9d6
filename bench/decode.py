"""How fast MusicGen decodes on this machine: transformers' `generate` vs ours at each precision.

Everything runs side by side in one process on the same random musicgen-small
weights (or a real checkpoint with `--model`), CFG on (batch 2), top-k 250 sampling,
after a warm-up. Per implementation it prints:

- ms per decoding step, median and p99 (one step = one position of the delay pattern
  = 20 ms of audio, so 20 ms per step is real time: the budget);
- RTF: seconds of audio per wall second of token generation (prefill and every step;
  EnCodec's decode is measured once on its own line and folded into "RTF+codec");
- the memory-bandwidth floor: bytes of projection weights read per step (the text
  cross-attention keys/values are computed once per prompt, not per step) over the
  bandwidth of a large in-memory copy, measured just before and just after that row
  (this host's bandwidth drifts by a quarter within minutes), and how far above that
  floor the step is;
- the relative logit error of each precision against our fp32 on the same inputs, over
  a prefill (many rows per projection) and decoding steps (two rows: int8's own kernel).

The floor leaves out the KV cache reads (ours and transformers' attend over the filled
part; ours on the torch path rounds it up to a bucket of 64 positions) and all per-op
overhead. `--threads 1,2` times every row on one thread and on two (torch's intra-op
threads; our int8 kernels always run on one), each against its own floor. On shared cores trust `--threads 1`: with two threads on two busy cores every op
waits until both threads get a core (measured here at load ~6: int8 step 58-80 ms on
1 thread, 284-657 ms on 2).

    python bench/decode.py [--steps 200] [--precisions fp32,bf16,int8] [--threads 1,2] [--json out/bench_decode.json]
    expotion-live bench decode ...   (the same `main(argv)`)
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import atomic_path  # noqa: E402
from expotion_live.model.precision import PRECISIONS, projection_bytes  # noqa: E402

FRAME_RATE = 50                   # EnCodec frames (decoding steps) per second of audio
BUDGET_MS = 1000 / FRAME_RATE     # a step must take at most this to keep up with playback
PROMPT = "warm electronic groove with soft pads"
CFG = 3.0
TOP_K = 250


@dataclass
class Row:
    """One line of the table."""

    name: str
    precision: str
    threads: int
    steps: int
    ms_median: float
    ms_p99: float
    prefill_ms: float             # first interval: the prefill (start token, text) and the first step
    rtf: float                    # audio seconds / generation wall seconds (CFG on)
    rtf_with_codec: float         # the same with EnCodec's decode of those seconds added
    weight_mb_per_step: float
    bandwidth_gb_s: float = 0.0   # copy bandwidth around this row's run (mean of before and after)
    floor_ms: float = 0.0
    x_floor: float = 0.0
    speedup: float = 0.0          # vs transformers' generate, median ms per step
    logit_rel_err: float | None = None  # vs our fp32 on the same codes and text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@functools.cache
def _copy_buffers(n_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.ones(n_bytes // 4)
    return src, torch.empty_like(src).copy_(src)   # touched once, so pages are mapped before timing


def copy_bandwidth(n_bytes: int = 512 << 20, repeats: int = 10) -> float:
    """Bytes per second moved by copying a buffer far larger than the caches (read + write counted)."""
    src, dst = _copy_buffers(n_bytes)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - began)
    return 2 * n_bytes / statistics.median(times)


def step_weight_bytes(decoder) -> int:
    """Projection bytes one decoding step reads: all of them but the text keys/values (cached at prefill)."""
    once_per_prompt = sum(projection_bytes(layer.encoder_attn.k_proj) + projection_bytes(layer.encoder_attn.v_proj)
                          for layer in decoder.layers)
    return projection_bytes(decoder) - once_per_prompt


class StepClock:
    """Timestamps every step: our `progress(done, total)` callback, or transformers' logits processors."""

    def __init__(self):
        self.stamps: list[float] = []

    def start(self) -> None:
        self.stamps = [time.perf_counter()]

    def progress(self, done: int, total: int) -> None:
        self.stamps.append(time.perf_counter())

    def logits_processor(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Called by transformers' sampling loop once per step, before the token is drawn."""
        self.stamps.append(time.perf_counter())
        return scores

    def intervals_ms(self) -> list[float]:
        return [1000 * (b - a) for a, b in zip(self.stamps, self.stamps[1:])]


def summarise(name: str, precision: str, clock: StepClock, wall: float, frames: int, codec_s_per_s: float,
              weight_bytes: int) -> Row:
    """One row at torch's current thread count."""
    intervals = clock.intervals_ms()
    steps = intervals[1:]  # the first interval holds the prefill
    median = statistics.median(steps)
    audio_s = frames / FRAME_RATE
    return Row(name=name, precision=precision, threads=torch.get_num_threads(), steps=len(steps),
               ms_median=median, ms_p99=percentile(steps, 0.99),
               prefill_ms=intervals[0], rtf=audio_s / wall, rtf_with_codec=audio_s / (wall + codec_s_per_s * audio_s),
               weight_mb_per_step=weight_bytes / 1e6)


def against_the_floor(measure: Callable[[], Row]) -> Row:
    """Run `measure` between two readings of the copy bandwidth; its floor uses their mean."""
    before = copy_bandwidth()
    row = measure()
    row.bandwidth_gb_s = (before + copy_bandwidth()) / 2 / 1e9
    row.floor_ms = row.weight_mb_per_step / row.bandwidth_gb_s   # MB / (GB/s) = ms
    row.x_floor = row.ms_median / row.floor_ms
    return row


def time_transformers(model_dir: Path, frames: int, codec_s_per_s: float) -> Row:
    """transformers' MusicgenForConditionalGeneration.generate (fp32, its growing cache), timed per step.

    Its streamer argument is not passed on to the sampling loop in transformers 5.23, so a
    logits processor (called once per step) holds the clock.
    """
    from transformers import AutoProcessor, LogitsProcessorList, MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(model_dir).eval()
    inputs = AutoProcessor.from_pretrained(model_dir)(text=[PROMPT], padding=True, return_tensors="pt")
    clock = StepClock()

    def generate(n_frames: int) -> None:
        # N audio frames take N + 3 steps over the 4-codebook delay pattern, as in ours
        model.generate(**inputs, do_sample=True, top_k=TOP_K, guidance_scale=CFG, max_new_tokens=n_frames + 3,
                       logits_processor=LogitsProcessorList([clock.logits_processor]))

    with torch.no_grad():
        generate(8)  # warm-up
        clock.start()
        generate(frames)
    # transformers decodes the audio with EnCodec after the last step; our generate returns codes.
    # Both walls end when the last step's logits are ready (ours then samples, about as long as theirs).
    wall = clock.stamps[-1] - clock.stamps[0]
    row = summarise("transformers generate", "fp32", clock, wall, frames, codec_s_per_s,
                    step_weight_bytes_hf(model))
    del model
    gc.collect()
    return row


def step_weight_bytes_hf(model) -> int:
    """The same count on transformers' module tree (fp32 nn.Linear everywhere)."""
    decoder = model.decoder
    total = projection_bytes(decoder.model.decoder.layers) + projection_bytes(decoder.lm_heads)
    cross_kv = sum(projection_bytes(layer.encoder_attn.k_proj) + projection_bytes(layer.encoder_attn.v_proj)
                   for layer in decoder.model.decoder.layers)
    return total - cross_kv


def time_ours(musicgen, name: str, precision: str, frames: int, codec_s_per_s: float,
              warmup_frames: int = 8) -> Row:
    """Our MusicGen.generate, timed per step through its progress callback."""
    text = musicgen.encode_text([PROMPT])
    clock = StepClock()
    musicgen.generate(text, warmup_frames, cfg=CFG, top_k=TOP_K, seed=0)  # warm-up
    clock.start()
    began = time.perf_counter()
    musicgen.generate(text, frames, cfg=CFG, top_k=TOP_K, seed=0, progress=clock.progress)
    wall = time.perf_counter() - began
    return summarise(name, precision, clock, wall, frames, codec_s_per_s, step_weight_bytes(musicgen.decoder))


def fixed_logits(musicgen, n_prefill: int = 24, n_steps: int = 8) -> torch.Tensor:
    """Decoder logits (2, K, 1 + n_steps, V) on fixed random codes, CFG batch [text; null]: the error column.

    The prefill's last position and `n_steps` decoding steps: int8 computes the first
    with a bf16 matmul (many rows) and the steps with its int8 kernel (two rows).
    """
    decoder = musicgen.decoder
    codes = torch.randint(0, decoder.config.vocab_size, (2, decoder.config.num_codebooks, n_prefill + n_steps),
                          generator=torch.Generator().manual_seed(0))
    cache = decoder.allocate_cache(2, n_prefill + n_steps)
    positions = torch.arange(n_prefill + n_steps)
    with torch.no_grad():
        out = [decoder.prefill(codes[:, :, :n_prefill], cache, musicgen.encode_text([PROMPT]).with_null())]
        out += [decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache)
                for p in range(n_prefill, n_prefill + n_steps)]
    return torch.stack(out, dim=2)


def codec_seconds_per_second(musicgen, frames: int) -> float:
    """EnCodec decode wall seconds per second of audio (fp32), on random codes."""
    codes = torch.randint(0, 2048, (1, musicgen.decoder.config.num_codebooks, frames),
                          generator=torch.Generator().manual_seed(0))
    musicgen.decode_audio(codes[:, :, :25])  # warm-up
    began = time.perf_counter()
    musicgen.decode_audio(codes)
    return (time.perf_counter() - began) / (frames / FRAME_RATE)


def print_table(rows: list[Row], model: str, codec_s_per_s: float, load: tuple) -> None:
    print(f"\n{model} decoding, CFG {CFG} (batch 2), top-k {TOP_K}; budget {BUDGET_MS:.0f} ms per step = real time")
    print("floor = weight MB per step / copy bandwidth (GB/s), read just before and after each row")
    print(f"load average before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores "
          f"(other processes share the cores: compare rows, not runs)")
    print(f"EnCodec decode: {codec_s_per_s:.3f} s per s of audio (fp32)\n")
    header = (f"{'implementation':<22} {'prec':<5} {'thr':>3} {'median ms':>9} {'p99 ms':>7} {'RTF':>5} "
              f"{'RTF+codec':>9} {'x faster':>8} {'MB/step':>8} {'GB/s':>5} {'floor ms':>8} {'x floor':>7} "
              f"{'logit err':>9} "
              f"{'budget':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        err = "-" if r.logit_rel_err is None else f"{r.logit_rel_err:.1e}"
        verdict = "ok" if r.ms_median <= BUDGET_MS else f"{r.ms_median / BUDGET_MS:.1f}x"
        print(f"{r.name:<22} {r.precision:<5} {r.threads:>3} {r.ms_median:>9.1f} {r.ms_p99:>7.1f} {r.rtf:>5.2f} "
              f"{r.rtf_with_codec:>9.2f} {r.speedup:>8.2f} {r.weight_mb_per_step:>8.0f} {r.bandwidth_gb_s:>5.1f} "
              f"{r.floor_ms:>8.1f} "
              f"{r.x_floor:>7.2f} {err:>9} {verdict:>7}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/decode.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="audio frames to generate per run (50 = 1 s)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="ours at these, comma separated")
    parser.add_argument("--model", type=Path, help="a MusicGen directory (default: random musicgen-small, "
                                                   "built into a temporary directory)")
    parser.add_argument("--threads", default="1", help="comma list of torch thread counts, each timed in turn: "
                                                       "e.g. 1,2")
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile'd decode_step")
    parser.add_argument("--no-transformers", action="store_true", help="skip transformers' generate")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown or not args.precisions:
        parser.error(f"--precisions takes a comma-separated subset of {','.join(PRECISIONS)}")
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        args.threads = []
    if not args.threads or min(args.threads) < 1:
        parser.error("--threads takes a comma-separated list of positive thread counts, e.g. 1,2")
    if args.steps < 10:
        parser.error("--steps must be at least 10")
    return args


def run(args: argparse.Namespace, model_dir: Path) -> list[Row]:
    """Every implementation at every thread count of `--threads`, in one process."""
    from expotion_live.model.generate import MusicGen

    load_before = os.getloadavg()[0]
    rows, logits, codec_s_per_s = [], {}, None
    for precision in dict.fromkeys(["fp32", *args.precisions]):  # fp32 first: the error reference
        musicgen = MusicGen.load(model_dir, device="cpu", precision=precision)
        torch.set_num_threads(args.threads[0])
        if codec_s_per_s is None:
            codec_s_per_s = codec_seconds_per_second(musicgen, args.steps)
        logits[precision] = fixed_logits(musicgen)
        if precision in args.precisions:
            for threads in args.threads:
                torch.set_num_threads(threads)
                rows.append(against_the_floor(
                    lambda: time_ours(musicgen, "ours", precision, args.steps, codec_s_per_s)))
            if args.compile:
                # one graph per attention bucket of 64 positions (plus the last, partial one)
                torch._dynamo.config.recompile_limit = max(8, args.steps // 64 + 2)
                musicgen.decoder.decode_step = torch.compile(musicgen.decoder.decode_step, dynamic=False)
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    # warm up at the timed length: the cache's and buckets' shapes are baked into the graphs
                    rows.append(against_the_floor(lambda: time_ours(
                        musicgen, "ours compiled", precision, args.steps, codec_s_per_s, warmup_frames=args.steps)))
        del musicgen
        gc.collect()
    for r in rows:
        r.logit_rel_err = ((logits[r.precision] - logits["fp32"]).norm() / logits["fp32"].norm()).item()
    if not args.no_transformers:
        reference = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            reference[threads] = against_the_floor(lambda: time_transformers(model_dir, args.steps, codec_s_per_s))
        rows[:0] = reference.values()
        for r in rows:
            r.speedup = reference[r.threads].ms_median / r.ms_median   # against transformers on as many threads
    _copy_buffers.cache_clear()   # 1 GB
    load = (load_before, os.getloadavg()[0])
    model = str(args.model or "random musicgen-small")
    print_table(rows, model, codec_s_per_s, load)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({
                "model": model, "budget_ms": BUDGET_MS, "cfg": CFG, "top_k": TOP_K,
                "codec_s_per_audio_s": codec_s_per_s, "load_average": load,
                "rows": [asdict(r) for r in rows]}, indent=2))
        print(f"\nwrote {args.json}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is not None:
        if not (args.model / "config.json").is_file():
            print(f"error: {args.model} is not a MusicGen directory (no config.json)", file=sys.stderr)
            return 1
        run(args, args.model)
        return 0
    from expotion_live.model.random_init import save_random_musicgen

    with tempfile.TemporaryDirectory(prefix="bench-musicgen-small-") as tmp:
        print("building a random musicgen-small (decoder + T5-base + EnCodec) ...", flush=True)
        run(args, save_random_musicgen(Path(tmp) / "small", preset="small", seed=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())

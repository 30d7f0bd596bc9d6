"""How fast MusicGen decodes on this machine: transformers' `generate` vs ours at each precision.

Everything runs side by side in one process on the same random weights of each
`--models` preset (small, medium, large; or a real checkpoint with `--model`), on
`--device cpu` or `cuda`, CFG on (batch 2), top-k 250 sampling, after a warm-up.
Rows: transformers' `generate`; ours, `MusicGen.generate` (eager, one step at a time);
ours streamed, the live engine's `GenerationStream` (on CUDA its step replayed as CUDA
graphs; timed per chunk of 25 frames, synchronised). Each of ours names the decode
backend its precision got at load (`model.backends`). Per implementation it prints:

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
  a prefill (many rows per projection) and decoding steps (two rows: int8's and int4's
  own kernels), and the greedy-token agreement there: the share of positions whose most
  likely token is fp32's (random weights judge neither well: `bench quality` on real ones).

The floor leaves out the KV cache reads (ours and transformers' attend over the filled
part; ours on the torch path rounds it up to a bucket of 64 positions) and all per-op
overhead. `--threads 1,2` times every row on one thread and on two (torch's intra-op
threads; our int8 kernels always run on one), each against its own floor. On shared
cores trust `--threads 1`: with two threads on two busy cores every op waits until
both threads get a core, so other processes' load multiplies the step time.

    python bench/decode.py [--device cpu|cuda] [--models small,medium,large] [--steps 200]
                           [--precisions fp32,bf16,int8,int4] [--threads 1,2] [--json out/bench_decode.json]
    expotion-live bench decode ...   (the same `main(argv)`)
"""
from __future__ import annotations

import argparse
import functools
import gc
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

from expotion_live.atomic import write_json  # noqa: E402
from expotion_live.features.schema import FRAME_RATE  # noqa: E402
from expotion_live.model.precision import (PRECISIONS, greedy_agreement, logit_error,  # noqa: E402
                                           projection_bytes)

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
    greedy_agreement: float | None = None  # share of positions whose argmax token is fp32's, same inputs
    model: str = "small"
    device: str = "cpu"
    backend: str = "-"            # ours: the decoder's decode backend (model.backends); "-" for transformers
    peak_gb: float | None = None  # CUDA: peak memory allocated from loading through generating


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sync(device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@functools.cache
def _copy_buffers(n_bytes: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.ones(n_bytes // 4, device=device)
    return src, torch.empty_like(src).copy_(src)   # touched once, so pages are mapped before timing


def copy_bandwidth(n_bytes: int = 512 << 20, repeats: int = 10, device: str = "cpu") -> float:
    """Bytes per second moved by copying a buffer far larger than the caches (read + write counted)."""
    src, dst = _copy_buffers(n_bytes, device)
    times = []
    for _ in range(repeats):
        sync(device)
        began = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - began)
    return 2 * n_bytes / statistics.median(times)


def step_weight_bytes(decoder) -> int:
    """Projection bytes one decoding step reads: all of them but the text keys/values (cached at prefill)."""
    once_per_prompt = sum(projection_bytes(layer.encoder_attn.k_proj) + projection_bytes(layer.encoder_attn.v_proj)
                          for layer in decoder.layers)
    return projection_bytes(decoder) - once_per_prompt


class StepClock:
    """Timestamps every step: our `progress(done, total)` callback, or transformers' logits processors.

    On CUDA each stamp waits for the step's kernels first (a launch-bound loop otherwise
    runs ahead of the GPU and the stamps time the launches)."""

    def __init__(self, device: str = "cpu"):
        self.stamps: list[float] = []
        self.device = device

    def start(self) -> None:
        sync(self.device)
        self.stamps = [time.perf_counter()]

    def progress(self, done: int, total: int) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def logits_processor(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Called by transformers' sampling loop once per step, before the token is drawn."""
        self.progress(0, 0)
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


def against_the_floor(measure: Callable[[], Row], device: str = "cpu") -> Row:
    """Run `measure` between two readings of the copy bandwidth; its floor uses their mean."""
    before = copy_bandwidth(device=device)
    row = measure()
    row.device = device
    row.bandwidth_gb_s = (before + copy_bandwidth(device=device)) / 2 / 1e9
    row.floor_ms = row.weight_mb_per_step / row.bandwidth_gb_s   # MB / (GB/s) = ms
    row.x_floor = row.ms_median / row.floor_ms
    return row


def time_transformers(model_dir: Path, frames: int, codec_s_per_s: float, device: str = "cpu") -> Row:
    """transformers' MusicgenForConditionalGeneration.generate (its growing cache), timed per step.

    fp32 on the CPU, bf16 on CUDA (what a GPU user runs). Its streamer argument is not
    passed on to the sampling loop in transformers 5.23, so a logits processor (called
    once per step) holds the clock.
    """
    from transformers import AutoProcessor, LogitsProcessorList, MusicgenForConditionalGeneration

    precision = "fp32" if device == "cpu" else "bf16"
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    model = MusicgenForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    inputs = AutoProcessor.from_pretrained(model_dir)(text=[PROMPT], padding=True, return_tensors="pt").to(device)
    clock = StepClock(device)

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
    row = summarise("transformers generate", precision, clock, wall, frames, codec_s_per_s,
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
    device = str(musicgen.device)
    clock = StepClock(device)
    musicgen.generate(text, warmup_frames, cfg=CFG, top_k=TOP_K, seed=0)  # warm-up
    clock.start()
    began = time.perf_counter()
    musicgen.generate(text, frames, cfg=CFG, top_k=TOP_K, seed=0, progress=clock.progress)
    sync(device)
    wall = time.perf_counter() - began
    row = summarise(name, precision, clock, wall, frames, codec_s_per_s, step_weight_bytes(musicgen.decoder))
    row.backend = musicgen.decoder.backend.name
    return row


def time_streamed(musicgen, precision: str, frames: int, codec_s_per_s: float, chunk: int = 25) -> Row:
    """The live engine's `GenerationStream`, chunk by chunk: per-step time = chunk time / its steps.

    Its graphs (CUDA) are captured by `prepare`, before the clock starts, as the live
    session's warm-up does; the first chunk's prefill of the start token is timed.
    """
    from expotion_live.model.stream import GenerationStream, Sampling

    device = str(musicgen.device)
    sampling = Sampling(cfg=CFG, top_k=TOP_K)
    stream = GenerationStream(musicgen, window=frames + chunk + 8, context=0, seed=0)
    stream.set_text(musicgen.encode_text([PROMPT]))
    stream.prepare(sampling)
    stream.advance(chunk, sampling)                       # warm-up
    stream.reset()
    clock = StepClock(device)
    clock.start()
    per_step: list[float] = []
    for _ in range(frames // chunk):
        before = stream.next_position
        stream.advance(chunk, sampling)
        clock.progress(0, 0)
        per_step.append(1000 * (clock.stamps[-1] - clock.stamps[-2]) / (stream.next_position - before))
    wall = clock.stamps[-1] - clock.stamps[0]
    steps = per_step[1:] or per_step                       # the first chunk holds the prefill and K - 1 more steps
    audio_s = chunk * (frames // chunk) / FRAME_RATE
    return Row(name="ours streamed" + (" graphs" if device.startswith("cuda") else ""), precision=precision,
               threads=torch.get_num_threads(), steps=stream.next_position, ms_median=statistics.median(steps),
               ms_p99=percentile(steps, 0.99), prefill_ms=per_step[0], rtf=audio_s / wall,
               rtf_with_codec=audio_s / (wall + codec_s_per_s * audio_s),
               weight_mb_per_step=step_weight_bytes(musicgen.decoder) / 1e6,
               backend=musicgen.decoder.backend.name)


def fixed_logits(musicgen, n_prefill: int = 24, n_steps: int = 8) -> torch.Tensor:
    """Decoder logits (2, K, 1 + n_steps, V) on fixed random codes, CFG batch [text; null]: the error column.

    The prefill's last position and `n_steps` decoding steps: int8 computes the first
    with a bf16 matmul (many rows) and the steps with its int8 kernel (two rows).
    """
    decoder = musicgen.decoder
    codes = torch.randint(0, decoder.config.vocab_size, (2, decoder.config.num_codebooks, n_prefill + n_steps),
                          generator=torch.Generator().manual_seed(0)).to(musicgen.device)
    cache = decoder.allocate_cache(2, n_prefill + n_steps)
    positions = torch.arange(n_prefill + n_steps, device=musicgen.device)
    with torch.no_grad():
        out = [decoder.prefill(codes[:, :, :n_prefill], cache, musicgen.encode_text([PROMPT]).with_null())]
        out += [decoder.decode_step(codes[:, :, p:p + 1], positions[p:p + 1], cache)
                for p in range(n_prefill, n_prefill + n_steps)]
    return torch.stack(out, dim=2).float().cpu()


def codec_seconds_per_second(musicgen, frames: int) -> float:
    """EnCodec decode wall seconds per second of audio (fp32), on random codes."""
    codes = torch.randint(0, 2048, (1, musicgen.decoder.config.num_codebooks, frames),
                          generator=torch.Generator().manual_seed(0))
    musicgen.decode_audio(codes[:, :, :25])  # warm-up (decode_audio returns host audio: synchronised)
    began = time.perf_counter()
    musicgen.decode_audio(codes)
    return (time.perf_counter() - began) / (frames / FRAME_RATE)


def print_table(rows: list[Row], model: str, codec_s_per_s: float, load: tuple) -> None:
    device = rows[0].device if rows else "cpu"
    gpu = f" on {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
    print(f"\n{model} decoding{gpu}, CFG {CFG} (batch 2), top-k {TOP_K}; budget {BUDGET_MS:.0f} ms per step = real time")
    print("floor = weight MB per step / copy bandwidth (GB/s), read just before and after each row")
    print(f"load average before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores "
          f"(other processes share the cores: compare rows, not runs)")
    print(f"EnCodec decode: {codec_s_per_s:.3f} s per s of audio (fp32)\n")
    header = (f"{'implementation':<22} {'prec':<5} {'backend':<11} {'thr':>3} {'median ms':>9} {'p99 ms':>7} "
              f"{'RTF':>5} {'RTF+codec':>9} {'x faster':>8} {'MB/step':>8} {'GB/s':>5} {'floor ms':>8} {'x floor':>7} "
              f"{'logit err':>9} {'greedy':>6} {'peak GB':>7} "
              f"{'budget':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        err = "-" if r.logit_rel_err is None else f"{r.logit_rel_err:.1e}"
        greedy = "-" if r.greedy_agreement is None else f"{r.greedy_agreement:.3f}"
        peak = "-" if r.peak_gb is None else f"{r.peak_gb:.1f}"
        verdict = "ok" if r.ms_median <= BUDGET_MS else f"{r.ms_median / BUDGET_MS:.1f}x"
        print(f"{r.name:<22} {r.precision:<5} {r.backend:<11} {r.threads:>3} {r.ms_median:>9.1f} {r.ms_p99:>7.1f} "
              f"{r.rtf:>5.2f} {r.rtf_with_codec:>9.2f} {r.speedup:>8.2f} {r.weight_mb_per_step:>8.0f} {r.bandwidth_gb_s:>5.1f} "
              f"{r.floor_ms:>8.1f} "
              f"{r.x_floor:>7.2f} {err:>9} {greedy:>6} {peak:>7} {verdict:>7}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/decode.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="audio frames to generate per run (50 = 1 s)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="ours at these, comma separated")
    parser.add_argument("--model", type=Path, help="a MusicGen directory (default: the random --models presets, "
                                                   "built into a temporary directory)")
    parser.add_argument("--models", default="small", help="comma list of random presets: small, medium, large")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to decode")
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
    if args.steps < 50:
        parser.error("--steps must be at least 50")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    return args


def run(args: argparse.Namespace, model_dir: Path, model: str) -> list[Row]:
    """Every implementation at every thread count of `--threads`, in one process."""
    from expotion_live.model.generate import MusicGen

    device = args.device
    cuda = device == "cuda"
    load_before = os.getloadavg()[0]
    rows, logits, codec_s_per_s = [], {}, None
    # fp32 first, the error reference; on CUDA only when asked for (a large fp32 decoder is 13 GB to load)
    order = args.precisions if cuda else ["fp32", *args.precisions]
    for precision in dict.fromkeys(order):
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        musicgen = MusicGen.load(model_dir, device=device, precision=precision)
        torch.set_num_threads(args.threads[0])
        if codec_s_per_s is None:
            codec_s_per_s = codec_seconds_per_second(musicgen, args.steps)
        logits[precision] = fixed_logits(musicgen)
        if precision in args.precisions:
            for threads in args.threads:
                torch.set_num_threads(threads)
                rows.append(against_the_floor(
                    lambda: time_ours(musicgen, "ours", precision, args.steps, codec_s_per_s), device))
                rows.append(against_the_floor(
                    lambda: time_streamed(musicgen, precision, args.steps, codec_s_per_s), device))
                if cuda:
                    for row in rows[-2:]:
                        row.peak_gb = torch.cuda.max_memory_allocated() / 1e9
            if args.compile:
                # one graph per attention bucket of 64 positions (plus the last, partial one)
                torch._dynamo.config.recompile_limit = max(8, args.steps // 64 + 2)
                mode = "reduce-overhead" if cuda else None   # CUDA graphs through torch.compile, where it can
                musicgen.decoder.choose_backend("modules")     # torch ops only: numba is opaque to tracing
                musicgen.decoder.decode_step = torch.compile(musicgen.decoder.decode_step, dynamic=False, mode=mode)
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    # warm up at the timed length: the cache's and buckets' shapes are baked into the graphs
                    rows.append(against_the_floor(lambda: time_ours(
                        musicgen, "ours compiled", precision, args.steps, codec_s_per_s, warmup_frames=args.steps),
                        device))
        del musicgen
        gc.collect()
    for r in rows:
        r.model = model
        if "fp32" in logits:
            r.logit_rel_err = logit_error(logits[r.precision], logits["fp32"])
            r.greedy_agreement = greedy_agreement(logits[r.precision], logits["fp32"])
    if not args.no_transformers:
        reference = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            reference[threads] = against_the_floor(
                lambda: time_transformers(model_dir, args.steps, codec_s_per_s, device), device)
            reference[threads].model = model
        rows[:0] = reference.values()
        for r in rows:
            r.speedup = reference[r.threads].ms_median / r.ms_median   # against transformers on as many threads
    _copy_buffers.cache_clear()   # 1 GB
    load = (load_before, os.getloadavg()[0])
    print_table(rows, model, codec_s_per_s, load)
    return rows


def save_rows(path: Path, rows: list[Row]) -> None:
    write_json(path, {
        "budget_ms": BUDGET_MS, "cfg": CFG, "top_k": TOP_K, "load_average": os.getloadavg()[0],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "rows": [asdict(r) for r in rows]})
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is not None:
        if not (args.model / "config.json").is_file():
            print(f"error: {args.model} is not a MusicGen directory (no config.json)", file=sys.stderr)
            return 1
        rows = run(args, args.model, str(args.model))
    else:
        from expotion_live.testing.random_musicgen import save_random_musicgen

        rows = []
        for preset in args.models:
            with tempfile.TemporaryDirectory(prefix=f"bench-musicgen-{preset}-") as tmp:
                print(f"building a random musicgen-{preset} (decoder + T5-base + EnCodec) ...", flush=True)
                on_gpu = args.device == "cuda"    # built on the GPU and saved in bf16: seconds, not minutes
                model_dir = save_random_musicgen(Path(tmp) / preset, preset=preset, seed=0,
                                                 dtype=torch.bfloat16 if on_gpu else None, device=args.device)
                rows += run(args, model_dir, f"random musicgen-{preset}")
    if args.json:
        save_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

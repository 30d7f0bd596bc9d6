"""How the live engine performs: first sound, control latency, DSP latency, sustained RTF, underruns.

Each configuration (model x precision x chunk length) runs the real `LiveSession`:
a replayed performance (alternating still / moving with the mouth open: motion energy
and expression step) feeds the real tracking-listener/timeline path, the real scheduler and source
fill the ring, and a file sink paced by the wall clock consumes it (the PulseAudio null
sink drains below real time, DESIGN.md §7, so it cannot judge RTF). Per row:

- first sound: `start()` (model loaded and warmed up) -> first non-silent block out;
- control latency: a step in the performance entering the timeline -> the first played
  sample of the first chunk whose condition window contains the step (mean and max over
  a step every 2.3 s, so steps fall at every phase of the chunk grid);
- DSP latency: features -> the audio block that applies them (mean), one block included;
- RTF: audio seconds produced per second spent producing them (prefill, decoding,
  EnCodec, joins), sustained over the run; ms/frame = render time per 20 ms frame;
- underruns (ring ran dry after the first sound) and seconds stretched (looped while
  generation was behind: the documented slower-than-real-time behaviour).

    python bench/live.py [--models tiny,small] [--precisions fp32,bf16,int8] [--chunks 0.5,1.0]
                         [--contexts 2,4] [--seconds 20] [--model-cache DIR] [--json out/bench_live.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import atomic_path  # noqa: E402
from expotion_live.features.schema import EXPRESSION_NAMES, FeatureFrame  # noqa: E402
from expotion_live.settings import Settings, override  # noqa: E402

CAMERA_FPS = 30.0
STEP_PERIOD = 2.3            # the performance steps every 2.3 s: not a multiple of any chunk, so steps land at every phase
MOUTH = EXPRESSION_NAMES.index("mouth_height")


@dataclass
class Row:
    model: str
    precision: str
    chunk_seconds: float
    context_seconds: float
    first_sound_s: float | None
    control_latency_s: float | None      # mean over the steps heard
    control_latency_max_s: float | None
    control_steps: int
    dsp_latency_ms: float | None
    rtf: float
    ms_per_frame: float
    underruns: int
    stretched_s: float
    played_s: float
    chunks: int


def performance(seconds: float, period: float) -> list[FeatureFrame]:
    """A performer who alternates every `period` seconds between still and moving hard with the mouth open."""
    frames = []
    for i in range(int(seconds * CAMERA_FPS)):
        t = i / CAMERA_FPS
        moving = int(t / period) % 2 == 1
        frame = FeatureFrame(t=t, face_found=True, pose_found=True, motion_energy=0.8 if moving else 0.02)
        frame.expression[MOUTH] = 0.9 if moving else 0.0
        frames.append(frame)
    return frames


def measure(settings: Settings, label: str, seconds: float) -> Row:
    from expotion_live.session import LiveSession, build_source

    source = build_source(settings)
    session = LiveSession(settings, source, performance(seconds + 30.0, STEP_PERIOD), output="file",
                          duration=seconds)
    steps: list[float] = []     # times the performance changed, as the timeline received them

    def watch(frame: FeatureFrame, image) -> None:
        moving = frame.motion_energy > 0.5
        if moving != watch.moving:
            watch.moving = moving
            steps.append(frame.t)

    watch.moving = False
    session.add_frame_listener(watch)
    session.start()
    session.wait(timeout=seconds * 3 + 60)
    status = session.status()
    session.stop()
    scheduler = session.scheduler
    latencies = []
    for step in steps:
        heard = [m for m in scheduler.marks if m.t_end >= step and m.played_at > 0]
        if heard:
            latencies.append(heard[0].played_at - step)
    frames = scheduler.frames_generated
    return Row(
        model=label, precision=settings.model.precision, chunk_seconds=settings.generation.chunk_seconds,
        context_seconds=settings.generation.context_seconds,
        first_sound_s=status.time_to_first_sound,
        control_latency_s=statistics.mean(latencies) if latencies else None,
        control_latency_max_s=max(latencies) if latencies else None, control_steps=len(latencies),
        dsp_latency_ms=None if status.dsp_latency is None else 1000 * status.dsp_latency,
        rtf=scheduler.sustained_rtf, ms_per_frame=1000 * scheduler.render_seconds_total / max(frames, 1),
        underruns=status.underruns, stretched_s=status.stretched_seconds, played_s=status.played_seconds,
        chunks=scheduler.chunks_done)


def print_table(rows: list[Row], block_size: int) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    print(f"\nlive engine, wall-clock paced file sink, block {block_size} samples; "
          f"real time = RTF >= 1 (20 ms of render per 20 ms frame)")
    header = (f"{'model':<8}{'prec':<6}{'chunk s':>8}{'context s':>10}{'first sound s':>14}"
              f"{'control s mean/max (n)':>24}{'DSP ms':>8}"
              f"{'RTF':>7}{'ms/frame':>10}{'underruns':>10}{'stretched s':>12}{'chunks':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        control = f"{fmt(r.control_latency_s, '.2f')}/{fmt(r.control_latency_max_s, '.2f')} ({r.control_steps})"
        print(f"{r.model:<8}{r.precision:<6}{r.chunk_seconds:>8.2f}{r.context_seconds:>10.1f}"
              f"{fmt(r.first_sound_s, '.2f'):>14}"
              f"{control:>24}{fmt(r.dsp_latency_ms, '.1f'):>8}{r.rtf:>7.2f}"
              f"{r.ms_per_frame:>10.1f}{r.underruns:>10d}{r.stretched_s:>12.1f}{r.chunks:>7d}")
    print("goals: first sound <= 1 s and control latency <= 0.5 s where RTF >= 1; DSP latency <= 30 ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small", help="comma list of random presets: tiny, small")
    parser.add_argument("--precisions", default="fp32,bf16,int8", help="comma list: fp32, bf16, int8")
    parser.add_argument("--chunks", default="", help="comma list of chunk_seconds (default: the settings')")
    parser.add_argument("--contexts", default="", help="comma list of context_seconds (default: the settings')")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio played per configuration")
    parser.add_argument("--model-cache", type=Path, help="keep the random models here between runs")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from expotion_live.model.random_init import save_random_musicgen

    args = parse_args(argv)
    base = Settings()
    chunks = [float(c) for c in args.chunks.split(",") if c] or [base.generation.chunk_seconds]
    contexts = [float(c) for c in args.contexts.split(",") if c] or [base.generation.context_seconds]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        cache = args.model_cache or Path(tmp)
        for preset in args.models.split(","):
            model_dir = cache / preset
            if not (model_dir / "config.json").exists():
                print(f"building a random {preset} MusicGen ...", flush=True)
                save_random_musicgen(model_dir, preset=preset, seed=0)
            for precision in args.precisions.split(","):
                for chunk, context in itertools.product(chunks, contexts):
                    settings = override(base, {
                        "model.dir": str(model_dir), "model.precision": precision, "engine.kind": "musicgen",
                        "generation.seed": 0, "generation.chunk_seconds": chunk, "generation.context_seconds": context,
                        "generation.first_chunk_seconds": min(base.generation.first_chunk_seconds, chunk)})
                    print(f"{preset} {precision} chunk {chunk:g} s context {context:g} s: "
                          f"playing {args.seconds:g} s ...", flush=True)
                    rows.append(measure(settings, preset, args.seconds))
                    print(f"  {rows[-1]}", flush=True)
    print_table(rows, base.audio.block_size)
    if args.json:
        payload = {"threads": torch.get_num_threads(), "seconds": args.seconds,
                   "settings": dataclasses.asdict(base.generation), "rows": [asdict(r) for r in rows]}
        with atomic_path(args.json) as tmp_json:
            tmp_json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

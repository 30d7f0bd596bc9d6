"""How the live engine performs: first sound, control latency, DSP latency, sustained RTF, underruns.

Each configuration (model x precision x chunk length x context) runs the real
`LiveSession` on `--device cpu` or `cuda`: a replayed performance (alternating still /
moving with the mouth open: motion energy and expression step) feeds the real
tracking-listener/timeline path, or with `--tracking video` the real camera thread and
MediaPipe tracking on the bundled demo video at its frame rate (so a CPU row pays for
tracking too; control latency is then not measured: the video has no known steps). The
real scheduler and source fill the ring, and a file sink paced by the wall clock
consumes it (the PulseAudio null sink drains below real time, docs/architecture.md, so it cannot
judge RTF). Per row:

- first sound: `start()` (model loaded and warmed up) -> first non-silent block out;
- control latency: a step in the performance entering the timeline -> the first played
  sample of the first chunk whose condition window contains the step (mean and max over
  a step every 2.3 s, so steps fall at every phase of the chunk grid);
- DSP latency: features -> the audio block that applies them (mean), one block included;
- RTF: audio seconds produced per second spent producing them (prefill, decoding,
  EnCodec, joins), sustained over the run; ms/frame = render time per 20 ms frame;
- underruns (ring ran dry after the first sound) and seconds stretched (looped while
  generation was behind: the documented slower-than-real-time behaviour), all of them
  and after the first 2 s (warm-up); slides of the streamed generation's window;
- busy: each live thread's CPU time as a share of the run's wall time (the generator's
  with the EnCodec part of it in brackets, tracking, capture, scheduler, the file sink);
  on 2 cores the shares add up to at most 200 %, and what a thread does not use it waits.

    python bench/live.py [--device cpu|cuda] [--models tiny,small,medium,large] [--precisions fp32,bf16,int8]
                         [--chunks 0.5,1.0] [--contexts 2,4] [--seconds 20] [--tracking replay|video]
                         [--adaptor] [--min-lead S] [--model-cache DIR] [--json out/bench_live.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import write_json  # noqa: E402
from expotion_live.features.schema import EXPRESSION_NAMES, FeatureFrame  # noqa: E402
from expotion_live.settings import Settings, override  # noqa: E402

CAMERA_FPS = 30.0
WARMUP_SECONDS = 2.0         # stretching in the first seconds played is reported apart
STEP_PERIOD = 2.3            # the performance steps every 2.3 s: not a multiple of any chunk, so steps land at every phase
MOUTH = EXPRESSION_NAMES.index("mouth_height")
THREAD_ROLES = (("generator", "generator"), ("tracking", "tracking"), ("capture", "capture"),
                ("scheduler", "scheduler"), ("output", "file-sink"))   # (role, thread name prefix)


@dataclass
class Row:
    model: str
    device: str
    tracking: str
    hands: bool
    precision: str
    adaptor: bool                        # conditioned on a random open adaptor (--adaptor)
    chunk_seconds: float
    context_seconds: float
    window_seconds: float
    first_sound_s: float | None
    control_latency_s: float | None      # mean over the steps heard
    control_latency_max_s: float | None
    control_steps: int
    dsp_latency_ms: float | None
    rtf: float
    ms_per_frame: float
    underruns: int
    stretched_s: float
    stretched_after_warmup_s: float
    played_s: float
    chunks: int
    slides: int
    busy: dict[str, float]               # role -> CPU seconds per wall second (THREAD_ROLES, and "codec")


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds each live thread has run so far, by role (THREAD_ROLES); threads gone are not counted."""
    busy: dict[str, float] = {}
    for thread in threading.enumerate():
        role = next((role for role, prefix in THREAD_ROLES if thread.name.startswith(prefix)), None)
        if role is not None and thread.ident is not None:
            busy[role] = busy.get(role, 0.0) + time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return busy


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


def measure(settings: Settings, label: str, seconds: float, tracking: str = "replay") -> Row:
    from expotion_live.live.session import LiveSession
    from expotion_live.live.source import build_source

    source = build_source(settings)
    if tracking == "video":
        from expotion_live.capture.sources import open_source
        from expotion_live.capture.thread import CaptureThread

        camera = dataclasses.replace(settings.camera, realtime=True, loop=True)
        frames = CaptureThread(open_source(str(REPO / "assets" / "demo_face.mp4"), camera))
    else:
        frames = performance(seconds + 30.0, STEP_PERIOD)
    session = LiveSession(settings, source, frames, output="file", duration=seconds)
    stretched_at_warmup = [None]
    steps: list[float] = []     # times the performance changed, as the timeline received them

    def watch(frame: FeatureFrame, image) -> None:
        moving = frame.motion_energy > 0.5
        if moving != watch.moving:
            watch.moving = moving
            steps.append(frame.t)

    watch.moving = False
    session.add_frame_listener(watch)
    def at_warmup(status) -> None:
        if stretched_at_warmup[0] is None and status.played_seconds >= WARMUP_SECONDS:
            stretched_at_warmup[0] = status.stretched_seconds

    started = time.monotonic()
    session.start()
    session.wait(timeout=seconds * 3 + 60, on_status=at_warmup)
    status = session.status()
    wall = time.monotonic() - started
    busy = {role: cpu / wall for role, cpu in thread_cpu_seconds().items()}   # before stop: the threads still run
    if hasattr(source, "codec_seconds"):
        busy["codec"] = source.codec_seconds / wall
    session.stop()
    scheduler = session.scheduler
    latencies = []
    for step in steps:
        # the first code conditioned on the step's frame (ChunkMark: code j <- t_condition + j / 50)
        heard = [m for m in scheduler.marks if m.t_condition + (m.n_frames - 1) / 50 >= step and m.played_at > 0]
        if heard:
            latencies.append(heard[0].played_at + max(0.0, step - heard[0].t_condition) - step)
    frames = scheduler.frames_generated
    stream = getattr(source, "stream", None)
    return Row(
        model=label, device=settings.model.device, tracking=tracking, hands=settings.tracking.hands,
        precision=settings.model.precision, adaptor=bool(settings.model.adaptor),
        chunk_seconds=settings.generation.chunk_seconds,
        context_seconds=settings.generation.context_seconds,
        window_seconds=settings.generation.window_seconds,
        first_sound_s=status.time_to_first_sound,
        control_latency_s=statistics.mean(latencies) if latencies else None,
        control_latency_max_s=max(latencies) if latencies else None, control_steps=len(latencies),
        dsp_latency_ms=None if status.dsp_latency is None else 1000 * status.dsp_latency,
        rtf=scheduler.sustained_rtf, ms_per_frame=1000 * scheduler.render_seconds_total / max(frames, 1),
        underruns=status.underruns, stretched_s=status.stretched_seconds,
        stretched_after_warmup_s=status.stretched_seconds - (stretched_at_warmup[0] or 0.0),
        played_s=status.played_seconds, chunks=scheduler.chunks_done, slides=0 if stream is None else stream.slides,
        busy=busy)


def busy_text(busy: dict[str, float]) -> str:
    def share(role: str) -> str:
        return "-" if role not in busy else f"{100 * busy[role]:.0f}"

    return (f"{share('generator')}({share('codec')})/{share('tracking')}/{share('capture')}/{share('scheduler')}/"
            f"{share('output')}")


def print_table(rows: list[Row], block_size: int) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    print(f"\nlive engine, wall-clock paced file sink, block {block_size} samples; "
          f"real time = RTF >= 1 (20 ms of render per 20 ms frame)")
    header = (f"{'model':<8}{'dev':<5}{'track':<7}{'hands':<6}{'prec':<6}{'adapt':<6}{'chunk s':>8}{'context s':>10}{'window s':>9}{'first sound s':>14}"
              f"{'control s mean/max (n)':>24}{'DSP ms':>8}"
              f"{'RTF':>7}{'ms/frame':>10}{'underruns':>10}{'stretched s (after 2 s)':>24}{'chunks':>7}{'slides':>7}"
              f"{'busy % gen(codec)/track/cap/sched/out':>40}")
    print(header)
    print("-" * len(header))
    for r in rows:
        control = f"{fmt(r.control_latency_s, '.2f')}/{fmt(r.control_latency_max_s, '.2f')} ({r.control_steps})"
        stretched = f"{r.stretched_s:.1f} ({r.stretched_after_warmup_s:.1f})"
        print(f"{r.model:<8}{r.device:<5}{r.tracking:<7}{'on' if r.hands else 'off':<6}{r.precision:<6}{'yes' if r.adaptor else 'no':<6}{r.chunk_seconds:>8.2f}{r.context_seconds:>10.1f}{r.window_seconds:>9.1f}"
              f"{fmt(r.first_sound_s, '.2f'):>14}"
              f"{control:>24}{fmt(r.dsp_latency_ms, '.1f'):>8}{r.rtf:>7.2f}"
              f"{r.ms_per_frame:>10.1f}{r.underruns:>10d}{stretched:>24}{r.chunks:>7d}{r.slides:>7d}"
              f"{busy_text(r.busy):>40}")
    print("goals: first sound <= 1 s and control latency <= 0.5 s where RTF >= 1; DSP latency <= 30 ms")


def random_adaptor(model_dir: Path, out: Path) -> str:
    """A random adaptor for the model, gates open so it changes the music (built once per cache)."""
    import torch

    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor, save_adaptor
    from expotion_live.model.generate import MusicGen

    if not (out / "adaptor.json").exists():
        torch.manual_seed(0)
        adaptor = ConditionAdaptor(AdaptorConfig(), MusicGen.load(model_dir, precision="fp32").decoder)
        with torch.no_grad():
            adaptor.gates.fill_(1.0)
        save_adaptor(adaptor, out)
    return str(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small",
                        help="comma list of random presets: tiny, small, medium, large")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where MusicGen runs")
    parser.add_argument("--tracking", default="replay", choices=("replay", "video"),
                        help="a replayed performance, or real tracking of the bundled demo video")
    parser.add_argument("--hands", default="", help="comma list of on,off: hand tracking in --tracking video "
                        "(default: the settings')")
    parser.add_argument("--windows", default="", help="comma list of window_seconds (default: the settings')")
    parser.add_argument("--precisions", default="fp32,bf16,int8", help="comma list: fp32, bf16, int8")
    parser.add_argument("--chunks", default="", help="comma list of chunk_seconds (default: the settings')")
    parser.add_argument("--contexts", default="", help="comma list of context_seconds (default: the settings')")
    parser.add_argument("--adaptor", action="store_true",
                        help="condition the music on a random adaptor with open gates (look-ahead 0, the prefix "
                             "streamed with the codes): control latency is then the adaptor's")
    parser.add_argument("--min-lead", type=float, default=None,
                        help="engine.min_lead_seconds (default: the settings'); small chunks want a small lead")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio played per configuration")
    parser.add_argument("--model-cache", type=Path, help="keep the random models here between runs")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from expotion_live.testing.random_musicgen import save_random_musicgen

    args = parse_args(argv)
    base = Settings()
    chunks = [float(c) for c in args.chunks.split(",") if c] or [base.generation.chunk_seconds]
    contexts = [float(c) for c in args.contexts.split(",") if c] or [base.generation.context_seconds]
    windows = [float(c) for c in args.windows.split(",") if c] or [base.generation.window_seconds]
    hands = [h == "on" for h in args.hands.split(",") if h] or [base.tracking.hands]
    if any(h not in ("on", "off") for h in args.hands.split(",") if h):
        raise SystemExit(f"--hands takes on and/or off, got {args.hands!r}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        cache = args.model_cache or Path(tmp)
        for preset in args.models.split(","):
            model_dir = cache / preset
            if not (model_dir / "config.json").exists():
                print(f"building a random {preset} MusicGen ...", flush=True)
                on_gpu = args.device == "cuda"     # built on the GPU and saved in bf16: seconds, not minutes
                save_random_musicgen(model_dir, preset=preset, seed=0, dtype=torch.bfloat16 if on_gpu else None,
                                     device=args.device)
            adaptor = random_adaptor(model_dir, cache / f"{preset}-adaptor") if args.adaptor else ""
            for precision in args.precisions.split(","):
                for chunk, context, window, hand in itertools.product(chunks, contexts, windows, hands):
                    lead = {} if args.min_lead is None else {"engine.min_lead_seconds": args.min_lead,
                                                             "engine.low_water_seconds": args.min_lead / 2}
                    settings = override(base, {**lead, "model.adaptor": adaptor,
                        "generation.crossfade_ms": min(base.generation.crossfade_ms, chunk * 500),   # half a chunk
                        "model.dir": str(model_dir), "model.precision": precision, "model.device": args.device,
                        "engine.kind": "musicgen", "generation.seed": 0, "generation.chunk_seconds": chunk,
                        "generation.context_seconds": context, "generation.window_seconds": window,
                        "tracking.hands": hand,
                        "generation.first_chunk_seconds": min(base.generation.first_chunk_seconds, chunk)})
                    print(f"{preset} {args.device} {precision} chunk {chunk:g} s context {context:g} s "
                          f"window {window:g} s, hands {'on' if hand else 'off'}: playing {args.seconds:g} s ...", flush=True)
                    rows.append(measure(settings, preset, args.seconds, args.tracking))
                    print(f"  {rows[-1]}", flush=True)
    print_table(rows, base.audio.block_size)
    if args.json:
        payload = {"threads": torch.get_num_threads(), "seconds": args.seconds,
                   "settings": dataclasses.asdict(base.generation), "rows": [asdict(r) for r in rows]}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())

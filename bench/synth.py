"""How fast the built-in synth renders, and what it sounds like on the demo face video.

Plays a timeline (the tracked demo video, looped to `--seconds`; or a made-up
performer with `--synthetic`) through `SynthSource` with the engine's offline renderer
(`engine.offline.render`: the live scheduler's chunks and joins), times every chunk, and
prints a table: milliseconds per chunk (median, p99) against the chunk's duration, and the
real-time factor (seconds of audio per second of compute, on one core).
Optionally writes the audio as a WAV and its spectrogram as a PNG.

    python bench/synth.py --wav out/synth_demo.wav --png out/synth_demo.png [--json out/bench_synth.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import atomic_path, write_json  # noqa: E402
from expotion_live.features.schema import FRAME_RATE  # noqa: E402
from expotion_live.engine import offline  # noqa: E402
from expotion_live.engine.scheduler import ChunkTiming  # noqa: E402
from expotion_live.engine.source import GenerationParams  # noqa: E402
from expotion_live.engine.synth import SynthSource, synthetic_performance  # noqa: E402
from expotion_live.settings import GenerationSettings  # noqa: E402
from expotion_live.features.schema import TimelineWindow  # noqa: E402


def demo_timeline(video: Path, seconds: float) -> TimelineWindow:
    """The tracked video, repeated until it lasts `seconds` (the app loops video files too)."""
    from expotion_live.features.offline import extract_video
    from expotion_live.settings import TrackingSettings

    clip = extract_video(video, TrackingSettings())
    repeats = int(np.ceil(seconds * FRAME_RATE / clip.n_frames))
    n = int(seconds * FRAME_RATE)
    return TimelineWindow(t_end=seconds, face=np.concatenate([clip.face] * repeats)[:n],
                          motion=np.concatenate([clip.motion] * repeats)[:n],
                          flow=np.concatenate([clip.flow] * repeats)[:n])


def synthetic_timeline(seconds: float) -> TimelineWindow:
    """A performer who goes through still/frowning, swaying and smiling, dancing fast."""
    third = seconds / 3
    parts = [synthetic_performance(third, 84, 0.1, smile=-0.5, seed=1),
             synthetic_performance(third, 108, 0.5, smile=0.6, seed=2),
             synthetic_performance(third, 132, 0.95, smile=0.0, seed=3)]
    return TimelineWindow(t_end=seconds, face=np.concatenate([p.face for p in parts]),
                          motion=np.concatenate([p.motion for p in parts]),
                          flow=np.concatenate([p.flow for p in parts]))


def play(timeline: TimelineWindow, timing: ChunkTiming) -> tuple[np.ndarray, list[float], list[int]]:
    """(the audio, seconds per chunk rendered and joined, tempo per chunk)."""
    source = SynthSource(timing.sample_rate, seed=0)
    params = GenerationParams(prompt="", cfg=1.0, temperature=1.0, top_k=0, top_p=0.0)   # the synth reads none
    times, tempi = [], []
    last = time.perf_counter()

    def timed(request) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        tempi.append(source.controls.bpm)
        last = now

    audio = offline.render(source, timeline, params, timing, timeline.n_frames, timed)
    return audio, times, tempi


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16")


def write_spectrogram(path: Path, audio: np.ndarray, sample_rate: int, title: str) -> None:
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectrum = librosa.amplitude_to_db(np.abs(librosa.stft(audio, n_fft=2048, hop_length=512)), ref=np.max)
    fig, ax = plt.subplots(figsize=(16, 6))
    image = librosa.display.specshow(spectrum, sr=sample_rate, hop_length=512, x_axis="time",
                                     y_axis="log", ax=ax, vmin=-80, vmax=0)
    fig.colorbar(image, ax=ax, format="%+2.0f dB")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=REPO / "assets" / "demo_face.mp4")
    parser.add_argument("--synthetic", action="store_true", help="a made-up performer instead of the video")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunk-seconds", type=float, default=1.0)
    parser.add_argument("--context-seconds", type=float, default=4.0)
    parser.add_argument("--crossfade-ms", type=float, default=40.0)
    parser.add_argument("--wav", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sample_rate = 32000

    if args.synthetic:
        timeline, label = synthetic_timeline(args.seconds), "synthetic performer"
    else:
        from expotion_live.capture.sources import CaptureError

        try:
            timeline, label = demo_timeline(args.video, args.seconds), args.video.name
        except CaptureError as err:
            print(f"error: {err} (or pass --synthetic)", file=sys.stderr)
            return 2
    timing = ChunkTiming.from_settings(GenerationSettings(chunk_seconds=args.chunk_seconds,
                                                          first_chunk_seconds=args.chunk_seconds,
                                                          context_seconds=args.context_seconds,
                                                          crossfade_ms=args.crossfade_ms), sample_rate)
    play(timeline, timing)                                  # warm-up (wavetable caches)
    audio, times, tempi = play(timeline, timing)

    chunk_ms = np.array(times) * 1000
    audio_seconds = len(audio) / sample_rate
    result = {
        "input": label, "audio_seconds": audio_seconds, "chunks": len(times),
        "chunk_seconds": args.chunk_seconds,
        "render_ms_median": float(np.median(chunk_ms)), "render_ms_p99": float(np.percentile(chunk_ms, 99)),
        "budget_ms": args.chunk_seconds * 1000, "rtf": audio_seconds / float(np.sum(times)),
        "peak": float(np.abs(audio).max()), "rms": float(np.sqrt(np.mean(audio ** 2))),
        "tempi_bpm": sorted(set(tempi)),
    }
    print(f"synth on {label}: {audio_seconds:.0f} s of audio in {len(times)} chunks")
    print(f"{'render ms/chunk median':>24} {'p99':>8} {'budget ms':>10} {'RTF':>8} {'peak':>6} {'rms':>6}")
    print(f"{result['render_ms_median']:24.2f} {result['render_ms_p99']:8.2f} {result['budget_ms']:10.0f} "
          f"{result['rtf']:8.1f} {result['peak']:6.2f} {result['rms']:6.3f}")
    print(f"tempo per chunk (BPM): {' '.join(str(t) for t in tempi)}")
    if args.wav:
        write_wav(args.wav, audio, sample_rate)
    if args.png:
        write_spectrogram(args.png, audio, sample_rate, f"SynthSource on {label}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

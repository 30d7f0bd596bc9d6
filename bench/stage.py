"""What the stage view costs the eyes: live tracking frames per second with and without it.

The live pipeline (`CaptureThread` + `TrackingThread` over the demo video, as fast as it
goes, hands on) runs while the GUI thread either idles ("no view") or drives the stage
view exactly as the window does ("stage view"): the meter and spectrogram refreshed from
an `AudioMonitor` every `STAGE_INTERVAL_MS`, the newest frame added to the signal plot
every `PREVIEW_INTERVAL_MS`, a chunk mark every 0.5 s, each view repainted. A feeder
thread pushes synth audio into the monitor block by block in real time, as the audio
callback does. Conditions alternate (`--rounds` each) so a busy neighbour on a shared host
weighs on both. Also reported: the GUI thread's cost of one stage tick (refresh + repaint).

    python bench/stage.py [--frames 200] [--rounds 2] [--json out/bench_stage.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from expotion_live.atomic import write_json  # noqa: E402
from expotion_live.capture.sources import DEMO_VIDEO, VideoFileSource  # noqa: E402
from expotion_live.settings import Settings  # noqa: E402

WARMUP = 10
BLOCK = 512
CHUNK_SECONDS = 0.5


class AudioFeed:
    """Synth audio pushed into a monitor one block at a time, paced to real time (the callback's part)."""

    def __init__(self, monitor, sample_rate: int):
        from expotion_live.engine import offline
        from expotion_live.engine.scheduler import ChunkTiming
        from expotion_live.engine.source import GenerationParams
        from expotion_live.engine.synth import SynthSource, synthetic_performance

        performer = synthetic_performance(8.0, bpm=120.0, level=0.8)
        generation = Settings().generation
        self._audio = offline.render(SynthSource(sample_rate), performer, GenerationParams.from_settings(generation),
                                     ChunkTiming.from_settings(generation, sample_rate), performer.n_frames)
        self._monitor, self._rate = monitor, sample_rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audio-feed", daemon=True)

    def _run(self) -> None:
        began, n = time.monotonic(), 0
        while not self._stop.is_set():
            start = (n * BLOCK) % (len(self._audio) - BLOCK)
            block = self._audio[start:start + BLOCK]
            self._monitor.push(block, float(np.abs(block).max()))
            n += 1
            self._stop.wait(max(0.0, began + n * BLOCK / self._rate - time.monotonic()))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_condition(video: Path, n_frames: int, stage: bool) -> tuple[float, list[float]]:
    """(tracking frames per wall-clock second, GUI seconds per stage tick) for one run."""
    from PyQt6.QtWidgets import QApplication

    from expotion_live.audio.monitor import AudioMonitor
    from expotion_live.capture.thread import CaptureThread
    from expotion_live.features.pipeline import TrackingThread
    from expotion_live.features.timeline import FeatureTimeline
    from expotion_live.features.tracker import Tracker
    from expotion_live.ui.stage import StageView
    from expotion_live.ui.window import PREVIEW_INTERVAL_MS, STAGE_INTERVAL_MS
    from expotion_live.ui.workers import LatestFrame

    app = QApplication.instance() or QApplication([])
    settings = Settings()
    sample_rate = settings.audio.sample_rate
    monitor = AudioMonitor(2 * sample_rate)
    view = StageView(sample_rate)
    view.resize(580, 180)
    latest = LatestFrame()
    counted: list[float] = []
    ticks: list[float] = []
    capture = CaptureThread(VideoFileSource(video, realtime=False, loop=True))
    with Tracker(settings.tracking) as tracker, AudioFeed(monitor, sample_rate):
        tracking = TrackingThread(capture, tracker, FeatureTimeline(settings.tracking.timeline_seconds),
                                  on_frame=[lambda frame, image: counted.append(time.perf_counter()), latest.put])
        if stage:
            view.show()
            view.set_monitor(monitor)
        capture.start()
        tracking.start()
        next_stage = next_preview = next_chunk = time.monotonic()
        chunk = 0
        while len(counted) < n_frames + WARMUP and tracking.status == "running":
            now = time.monotonic()
            if stage and now >= next_preview:
                item = latest.take()
                if item is not None:
                    view.plot.add_frame(item[0])
                next_preview += PREVIEW_INTERVAL_MS / 1000
            if stage and now >= next_chunk:
                view.plot.add_chunk(chunk, now)
                chunk += 1
                next_chunk += CHUNK_SECONDS
            if stage and now >= next_stage:
                began = time.perf_counter()
                view.refresh()
                view.repaint()
                ticks.append(time.perf_counter() - began)
                next_stage += STAGE_INTERVAL_MS / 1000
            app.processEvents()
            time.sleep(0.005)
        tracking.stop()
        capture.stop()
    view.close()
    timed = counted[WARMUP:]
    return (len(timed) - 1) / (timed[-1] - timed[0]), ticks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEMO_VIDEO)
    parser.add_argument("--frames", type=int, default=200, help="tracked frames timed per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each condition, alternating")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    fps: dict[str, list[float]] = {"no view": [], "stage view": []}
    ticks: list[float] = []
    for _ in range(args.rounds):
        for name in fps:
            rate, tick = run_condition(args.video, args.frames, stage=name == "stage view")
            fps[name].append(rate)
            ticks += tick
    base = float(np.median(fps["no view"]))
    rows = [{"condition": name, "fps_median": float(np.median(r)), "fps_runs": [round(v, 1) for v in r],
             "vs_no_view": float(np.median(r)) / base} for name, r in fps.items()]
    tick_ms = 1000.0 * np.asarray(ticks)
    print(f"live tracking ({args.frames} frames per run, {args.rounds} runs each, alternating; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(f"{'condition':<12} {'fps (median)':>12} {'runs':>18} {'vs no view':>11}")
    for row in rows:
        runs = str(row["fps_runs"])
        print(f"{row['condition']:<12} {row['fps_median']:>12.1f} {runs:>18} {row['vs_no_view']:>10.2f}x")
    print(f"stage tick (refresh + repaint, GUI thread): median {np.median(tick_ms):.2f} ms, "
          f"p99 {np.percentile(tick_ms, 99):.2f} ms over {len(ticks)} ticks")
    if args.json:
        result = {"rows": rows, "tick_median_ms": float(np.median(tick_ms)),
                  "tick_p99_ms": float(np.percentile(tick_ms, 99)), "frames": args.frames, "rounds": args.rounds,
                  "cpus": os.cpu_count(), "load": os.getloadavg()[0]}
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

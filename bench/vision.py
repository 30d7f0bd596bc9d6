"""How fast the eyes are: capture + face mesh + pose + hands + optical flow at 640x480.

Measures, in one run on the same frames of the demo video (or `--video`):
- per-stage cost, each stage timed on its own: decoding a frame (capture), colour
  conversion, MediaPipe face mesh (478 landmarks with iris), MediaPipe pose, MediaPipe
  hands (`HandTracker` as the tracker runs it: while no hand is tracked, the landmarker
  only every third frame), DIS optical flow, and the full `Tracker.process` (all of the
  above plus the feature maths, the conductor and One-Euro filters; "features + filters"
  is the remainder);
- tracking alone: frames per second of `Tracker.process` (median cost);
- the live pipeline: `CaptureThread` + `TrackingThread` + timeline over the file, as
  fast as possible, frames per second of wall-clock time; with `--beside-synth`, while
  the gesture synth renders 0.5 s chunks in real time on another thread, as on stage.

`--conducting` draws the demo's two conducting hands (`testing.hand_video`) over the
video, so two hands are tracked; `--no-hands` switches hand tracking off.

Targets: >= 30 fps for tracking alone (a 30 fps camera keeps up; 33.3 ms per frame);
>= 25 fps for the live pipeline beside the synth.

    python bench/vision.py [--frames 300] [--conducting] [--no-hands] [--beside-synth] [--json out/bench_vision.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import write_json  # noqa: E402
from expotion_live.capture.sources import DEMO_VIDEO, VideoFileSource  # noqa: E402
from expotion_live.settings import TrackingSettings  # noqa: E402

TARGET_FPS = 30.0
TARGET_LIVE_FPS = 25.0       # the live pipeline beside the synth (issue 18)
SYNTH_CHUNK_SECONDS = 0.5
WARMUP = 10
TOTAL = "Tracker.process (all)"
REMAINDER = "features + filters (remainder)"


def load_frames(video: Path, n_frames: int) -> tuple[list[np.ndarray], list[float]]:
    """The first `n_frames` frames (looping if the file is shorter) and the cost of decoding each."""
    source = VideoFileSource(video, realtime=False, loop=True, start_time=0.0)
    frames, costs = [], []
    for _ in range(n_frames):
        began = time.perf_counter()
        captured = source.read()
        costs.append(time.perf_counter() - began)
        frames.append(captured.image_bgr)
    source.close()
    return frames, costs


def measure_stages(frames: list[np.ndarray], settings: TrackingSettings, fps: float) -> dict[str, list[float]]:
    """Seconds per frame of each stage; the stages run interleaved frame by frame, so the
    other load on the machine falls on all of them alike (side by side, one run)."""
    import cv2

    from expotion_live.features import landmarkers
    from expotion_live.features.flow import FlowTracker
    from expotion_live.features.hands import HandTracker
    from expotion_live.features.schema import FeatureFrame
    from expotion_live.features.tracker import Tracker

    face_mesh, pose = landmarkers.face_landmarker(), landmarkers.pose_landmarker()
    flow = FlowTracker(settings.flow_width)
    tracker = Tracker(settings)
    image: list = [None]
    stages = {
        "colour conversion (+ mp.Image)": lambda i, f: image.__setitem__(
            0, landmarkers.mp_image(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))),
        "face mesh (478 + iris)": lambda i, f: face_mesh.detect_for_video(image[0], round(i * 1000 / fps)),
        "pose (full model)": lambda i, f: pose.detect_for_video(image[0], round(i * 1000 / fps)),
        f"optical flow (DIS, {settings.flow_width} wide)": lambda i, f: flow.process(f, i / fps),
    }
    hands = HandTracker(settings.hand_model) if settings.hands else None
    if hands is not None:
        stages[f"hands ({settings.hand_model} model)"] = lambda i, f: hands.process(
            image[0], round(i * 1000 / fps), FeatureFrame(t=i / fps))
    stages[TOTAL] = lambda i, f: tracker.process(f, i / fps)
    costs: dict[str, list[float]] = {name: [] for name in stages}
    for i, frame in enumerate(frames[:WARMUP] + frames):
        for name, stage in stages.items():
            began = time.perf_counter()
            stage(i, frame)
            if i >= WARMUP:
                costs[name].append(time.perf_counter() - began)
    face_mesh.close()
    pose.close()
    tracker.close()
    if hands is not None:
        hands.close()
    parts = np.sum([costs[name] for name in stages if name != TOTAL], axis=0)
    costs[REMAINDER] = list(np.asarray(costs[TOTAL]) - parts)
    costs[TOTAL] = costs.pop(TOTAL)                        # keep the total as the last row
    return costs


class _LoadStopped(Exception):
    """Raised between chunks to end the synth load's render early."""


class SynthLoad:
    """The gesture synth rendering SYNTH_CHUNK_SECONDS chunks on its own thread, paced to real time,
    through the engine's offline renderer (the live scheduler's chunks and joins)."""

    def __init__(self):
        from expotion_live.engine import offline
        from expotion_live.engine.scheduler import ChunkTiming
        from expotion_live.engine.source import GenerationParams
        from expotion_live.engine.synth import SynthSource, synthetic_performance
        from expotion_live.settings import GenerationSettings

        generation = GenerationSettings(chunk_seconds=SYNTH_CHUNK_SECONDS, first_chunk_seconds=SYNTH_CHUNK_SECONDS)
        performer = synthetic_performance(600.0, bpm=120.0, level=0.8)
        source = SynthSource()
        self._render = functools.partial(offline.render, source, performer, GenerationParams.from_settings(generation),
                                         ChunkTiming.from_settings(generation, source.sample_rate), performer.n_frames)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="synth-load", daemon=True)
        self.chunks = 0

    def _run(self) -> None:
        began = time.monotonic()

        def paced(request) -> None:
            self.chunks += 1
            if self._stop.wait(max(0.0, began + self.chunks * SYNTH_CHUNK_SECONDS - time.monotonic())):
                raise _LoadStopped

        try:
            self._render(paced)
        except _LoadStopped:
            pass

    def __enter__(self) -> SynthLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure_pipeline(video: Path, n_frames: int, settings: TrackingSettings) -> tuple[float, int]:
    """(frames per wall-clock second, frames) of capture thread + tracking thread, file as fast as possible."""
    from expotion_live.capture.thread import CaptureThread
    from expotion_live.features.pipeline import TrackingThread
    from expotion_live.features.timeline import FeatureTimeline
    from expotion_live.features.tracker import Tracker

    capture = CaptureThread(VideoFileSource(video, realtime=False, loop=True))
    counted = []
    with Tracker(settings) as tracker:
        tracking = TrackingThread(capture, tracker, FeatureTimeline(settings.timeline_seconds),
                                  on_frame=[lambda frame, image: counted.append(time.perf_counter())])
        capture.start()
        tracking.start()
        while len(counted) < n_frames + WARMUP and tracking.status == "running":
            time.sleep(0.05)
        tracking.stop()
        capture.stop()
    timed = counted[WARMUP:]
    return (len(timed) - 1) / (timed[-1] - timed[0]), len(timed)


def summarise(costs: dict[str, list[float]]) -> list[dict]:
    rows = []
    for stage, seconds in costs.items():
        ms = 1000.0 * np.asarray(seconds)
        rows.append({"stage": stage, "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEMO_VIDEO)
    parser.add_argument("--frames", type=int, default=300, help="frames timed per stage")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--conducting", action="store_true", help="draw two conducting hands over the video")
    parser.add_argument("--no-hands", action="store_true", help="hand tracking off ([tracking] hands = false)")
    parser.add_argument("--hand-model", choices=("lite", "full"), default=TrackingSettings.hand_model)
    parser.add_argument("--beside-synth", action="store_true",
                        help="time the live pipeline while the gesture synth renders in real time")
    args = parser.parse_args(argv)
    settings = dataclasses.replace(TrackingSettings(), hands=not args.no_hands, hand_model=args.hand_model)
    name = args.video.name
    if args.conducting:
        from expotion_live.testing.hand_video import make_hand_video

        name += " + conducting hands"
        args.video, _ = make_hand_video(Path(tempfile.mkdtemp()) / "conducting.mp4", (90.0, 120.0), 24,
                                        background=args.video)

    frames, decode = load_frames(args.video, args.frames)
    fps = VideoFileSource(args.video).fps
    height, width = frames[0].shape[:2]
    costs = {"capture (decode a frame)": decode, **measure_stages(frames, settings, fps)}
    rows = summarise(costs)
    synth_chunks = 0
    if args.beside_synth:
        with SynthLoad() as synth:
            pipeline_fps, pipeline_frames = measure_pipeline(args.video, args.frames, settings)
        synth_chunks = synth.chunks
    else:
        pipeline_fps, pipeline_frames = measure_pipeline(args.video, args.frames, settings)
    tracking_ms = rows[-1]["median_ms"]

    hands = f"hands on ({settings.hand_model} model)" if settings.hands else "hands off"
    print(f"vision benchmark: {name}, {width}x{height}, {len(frames)} frames per stage, {hands}")
    print(f"{'stage':<34}{'median ms':>11}{'p99 ms':>10}{'share':>8}")
    for row in rows:
        share = "" if row["stage"].startswith("capture") else f"{100 * row['median_ms'] / tracking_ms:7.0f}%"
        print(f"{row['stage']:<34}{row['median_ms']:11.2f}{row['p99_ms']:10.2f}{share:>8}")
    tracking_fps = 1000.0 / tracking_ms
    budget = 1000.0 / TARGET_FPS
    print(f"tracking alone: {tracking_fps:.1f} fps ({tracking_ms:.1f} ms of a {budget:.1f} ms budget at "
          f"{TARGET_FPS:g} fps) -> {'meets' if tracking_fps >= TARGET_FPS else 'MISSES'} the {TARGET_FPS:g} fps target")
    beside = (f", beside the synth ({synth_chunks} chunks of {SYNTH_CHUNK_SECONDS:g} s rendered)"
              if args.beside_synth else "")
    live = ("meets" if pipeline_fps >= TARGET_LIVE_FPS else "MISSES") + f" the {TARGET_LIVE_FPS:g} fps live target"
    print(f"live pipeline (capture thread + tracking thread + timeline{beside}): {pipeline_fps:.1f} fps "
          f"over {pipeline_frames} frames{' -> ' + live if args.beside_synth else ''}")
    if args.json:
        result = {"video": name, "width": width, "height": height, "frames": len(frames),
                  "hands": settings.hands, "hand_model": settings.hand_model, "beside_synth": args.beside_synth,
                  "stages": rows, "tracking_fps": tracking_fps, "pipeline_fps": pipeline_fps,
                  "target_fps": TARGET_FPS, "target_live_fps": TARGET_LIVE_FPS}
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

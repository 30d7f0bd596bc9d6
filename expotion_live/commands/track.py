"""`expotion-live track`: run the eyes alone, headless; print what they see; record it.

    expotion-live track                                  # first camera, else the demo video
    expotion-live track --source "C920" --seconds 30 --record take.npz --calibrate
    expotion-live track --source take.mp4 --fast --no-loop --record take.npz

Every second one line: tracking fps, cost per frame, dropped frames, face/pose found,
head angles and the main expression scalars. `--record` writes every tracked frame to a
tracking recording (.npz) that can be played back instead of a camera.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..settings import Settings, override

STATUS_INTERVAL = 1.0   # seconds between status lines


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("track", help="run face and body tracking headless; print it, record it to a file",
                              description="Track a camera or video file without music: check the camera, "
                                          "the lighting and the features, or record tracking for playback.")
    p.add_argument("--source", help='camera index, camera name, /dev/videoN, video file or "auto" '
                                    "(settings: camera.source)")
    p.add_argument("--width", type=int, help="camera width (settings: camera.width)")
    p.add_argument("--height", type=int, help="camera height (settings: camera.height)")
    p.add_argument("--fps", type=float, help="camera frame rate (settings: camera.fps)")
    p.add_argument("--fast", action="store_true", help="video files: as fast as possible, not at their frame rate")
    p.add_argument("--no-loop", action="store_true", help="video files: stop at the end instead of looping")
    p.add_argument("--seconds", type=float, metavar="S", help="stop after this long (default: until Ctrl-C "
                                                              "or the end of a non-looping file)")
    p.add_argument("--calibrate", action="store_true", help="take the first half second of face as neutral")
    p.add_argument("--record", metavar="NPZ", help="save every tracked frame to this tracking recording")
    p.set_defaults(handler=run_track)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    flags = {"camera.source": args.source, "camera.width": args.width, "camera.height": args.height,
             "camera.fps": args.fps, "camera.realtime": False if args.fast else None,
             "camera.loop": False if args.no_loop else None}
    return {key: value for key, value in flags.items() if value is not None}


def _status_line(stats, frame) -> str:
    line = f"{stats.fps:5.1f} fps  {stats.tracking_ms:5.1f} ms/frame  dropped {stats.dropped:4d}"
    if frame is None:
        return line + "  (no frame yet)"
    line += f"  face {'yes' if frame.face_found else 'no '}  pose {'yes' if frame.pose_found else 'no '}"
    if frame.face_found:
        yaw, pitch, roll = frame.head
        mouth_height, smile = frame.expression[1], frame.expression[2]
        line += (f"  yaw {yaw:+.2f} pitch {pitch:+.2f} roll {roll:+.2f}"
                 f"  mouth {mouth_height:.2f} smile {smile:.2f}")
    return line + f"  energy {frame.motion_energy:.2f}"


def run_track(args: argparse.Namespace, settings: Settings) -> int:
    """Handler: capture + tracking threads until --seconds, the end of the file, or Ctrl-C."""
    from ..capture.sources import CaptureError, open_source
    from ..capture.thread import CaptureThread
    from ..features.pipeline import TrackingThread
    from ..features.recording import RecordingError, TrackingRecorder
    from ..features.timeline import FeatureTimeline

    settings = override(settings, _overrides(args))
    if args.record and not args.record.endswith(".npz"):
        print(f"expotion-live track: --record needs a .npz file name, got {args.record}", file=sys.stderr)
        return 2
    try:
        source = open_source(settings.camera.source, settings.camera)
    except CaptureError as err:
        print(f"expotion-live track: {err}", file=sys.stderr)
        return 1
    recorder = TrackingRecorder()
    capture = CaptureThread(source)
    tracking = TrackingThread.open(capture, settings.tracking, FeatureTimeline(settings.tracking.timeline_seconds),
                                   on_frame=[recorder] if args.record else [])
    if args.calibrate:
        tracking.calibrate()
    print(f"tracking {source.description} (Ctrl-C to stop)", file=sys.stderr)
    capture.start()
    tracking.start()
    began = time.monotonic()
    try:
        while tracking.status == "running":
            if args.seconds is not None and time.monotonic() - began >= args.seconds:
                break
            time.sleep(STATUS_INTERVAL)
            print(_status_line(tracking.stats(), tracking.timeline.latest()), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        tracking.stop()
        capture.stop()
        tracking.close()
    failure = capture.error or tracking.error
    if args.record:
        try:
            path = recorder.save(args.record)
            print(f"recorded {len(recorder)} frames to {path}", file=sys.stderr)
        except RecordingError as err:
            print(f"expotion-live track: {err}", file=sys.stderr)
            return 1
    if failure is not None:
        print(f"expotion-live track: {failure}", file=sys.stderr)
        return 1
    return 0

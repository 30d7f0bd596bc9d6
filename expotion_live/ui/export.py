"""Export a performance: the camera video with the tracking overlay, muxed with the played audio.

Two ways to get there, sharing one encoder (`media.VideoEncoder`: raw BGR frames piped into ffmpeg, H.264):
- offline, `export_performance(video, audio, out)`: a camera or rehearsal video and the
  WAV of what was played (`[audio] out`); the video is tracked again with the live
  `Tracker`, drawn with the live `draw_overlay`, and muxed with the audio in one pass;
- live, `performance.PerformanceRecorder` encodes the overlay frames while the session
  runs, and `media.mux` adds the played WAV when it stops.
Outputs are written atomically; nothing is left behind on failure.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2

from ..media import MediaError, VideoEncoder, ffmpeg
from ..settings import TrackingSettings
from .overlay import draw_overlay

def export_performance(video: str | Path, audio: str | Path, out: str | Path, tracking: TrackingSettings,
                       mirror: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write `out` (.mp4): `video` with face mesh, pose and flow drawn on, and `audio` as its sound."""
    from ..features.tracker import Tracker

    video, audio, out = Path(video), Path(audio), Path(out)
    ffmpeg()
    for path, what in ((video, "video"), (audio, "audio")):
        if not path.is_file():
            raise MediaError(f"{what} file {path} does not exist")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise MediaError(f"cannot read video {video} (not a video file OpenCV can decode)")
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        encoder = VideoEncoder(out, size, fps, audio)
        try:
            with Tracker(tracking) as tracker:
                while True:
                    ok, image = capture.read()
                    frame = tracker.process(image, encoder.frames / fps) if ok else None
                    if frame is None or not encoder.write(draw_overlay(image, frame, mirror)):
                        break
                    if progress is not None:
                        progress(encoder.frames, total)
        except BaseException:
            encoder.abort()
            raise
        return encoder.close()
    finally:
        capture.release()

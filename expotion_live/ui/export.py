"""Export a performance: the camera video with the tracking overlay, muxed with the played audio.

Two ways to get there, sharing one encoder (raw BGR frames piped into ffmpeg, H.264):
- offline, `export_performance(video, audio, out)`: a camera or rehearsal video and the
  WAV of what was played (`[audio] out`); the video is tracked again with the live
  `Tracker`, drawn with the live `draw_overlay`, and muxed with the audio in one pass;
- live, `performance.PerformanceRecorder` encodes the overlay frames while the session
  runs, and `mux` adds the played WAV when it stops.
Outputs are written atomically; nothing is left behind on failure.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..atomic import AtomicFile, atomic_path
from ..settings import TrackingSettings
from .overlay import draw_overlay


class ExportError(RuntimeError):
    """The export cannot be made; the message says what to fix."""


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise ExportError("ffmpeg is not installed; install it (apt-get install ffmpeg) to export")
    return path


def _last_line(errors: bytes) -> str:
    return (errors.decode(errors="replace").strip().splitlines() or ["no message"])[-1]


VIDEO_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
AUDIO_CODEC = ["-c:a", "aac", "-b:a", "192k"]


class VideoEncoder:
    """Raw BGR frames in, an H.264 MP4 out (with `audio` muxed in when given), written atomically."""

    def __init__(self, out: Path, size: tuple[int, int], fps: float, audio: Path | None = None):
        width, height = size
        self.out = Path(out)
        self.frames = 0
        command = [_ffmpeg(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
                   "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-"]
        if audio is not None:
            command += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", *AUDIO_CODEC, "-shortest"]
        self._file = AtomicFile(self.out)
        try:
            self._process = subprocess.Popen([*command, *VIDEO_CODEC, "-movflags", "+faststart", str(self._file.tmp)],
                                             stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        except BaseException:
            self._file.abort()
            raise

    def write(self, image: np.ndarray) -> bool:
        """Queue one frame; False once ffmpeg has stopped taking frames (its error comes at `close`)."""
        try:
            self._process.stdin.write(image.tobytes())
        except (BrokenPipeError, ValueError):
            return False
        self.frames += 1
        return True

    def close(self) -> Path:
        """Finish the file and move it into place; ExportError (and no file) if ffmpeg failed."""
        with contextlib.suppress(BrokenPipeError):
            _, errors = self._process.communicate()
        if self._process.returncode != 0 or self.frames == 0:
            reason = _last_line(errors) if self._process.returncode != 0 else "no frames"
            self._file.abort()
            raise ExportError(f"ffmpeg could not export to {self.out}: {reason}")
        return self._file.commit()

    def abort(self) -> None:
        self._process.kill()
        self._process.communicate()
        self._file.abort()


def mux(video: Path, audio: Path, out: Path) -> Path:
    """`out` = `video`'s picture (not re-encoded) + `audio` as AAC, as long as the shorter of the two."""
    with atomic_path(out) as tmp:
        result = subprocess.run([_ffmpeg(), "-loglevel", "error", "-y", "-i", str(video), "-i", str(audio),
                                 "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *AUDIO_CODEC, "-shortest",
                                 "-movflags", "+faststart", str(tmp)], capture_output=True)
        if result.returncode != 0:
            raise ExportError(f"ffmpeg could not mux {video} and {audio}: {_last_line(result.stderr)}")
    return out


def export_performance(video: str | Path, audio: str | Path, out: str | Path, tracking: TrackingSettings,
                       mirror: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write `out` (.mp4): `video` with face mesh, pose and flow drawn on, and `audio` as its sound."""
    from ..features.tracker import Tracker

    video, audio, out = Path(video), Path(audio), Path(out)
    _ffmpeg()
    for path, what in ((video, "video"), (audio, "audio")):
        if not path.is_file():
            raise ExportError(f"{what} file {path} does not exist")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ExportError(f"cannot read video {video} (not a video file OpenCV can decode)")
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

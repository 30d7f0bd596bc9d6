"""ffmpeg, the one way video files are written: raw frames encoded to H.264, music muxed onto a video.

`generate --video-out`, `export` and the live performance recorder all end here, so they
share one command line, one atomic write (nothing is left behind on failure) and one set
of errors that say what to fix: ffmpeg missing, a video ffmpeg cannot read, ffmpeg's own
last line otherwise.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .atomic import AtomicFile, atomic_path

VIDEO_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
AUDIO_CODEC = ["-c:a", "aac", "-b:a", "192k"]
VIDEO_OUT_SUFFIXES = (".mp4", ".mov", ".mkv")   # containers that take a copied video stream plus AAC


class MediaError(RuntimeError):
    """A video cannot be read or written; the message says what to fix."""


def ffmpeg() -> str:
    """The ffmpeg executable, or MediaError saying how to install it."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise MediaError("ffmpeg is not installed; install it (apt-get install ffmpeg) to write videos")
    return path


def _last_line(errors: bytes) -> str:
    return (errors.decode(errors="replace").strip().splitlines() or ["no message"])[-1]


def _check_video(video: Path) -> None:
    """MediaError unless `video` is a file with a video stream ffmpeg can read."""
    if not video.is_file():
        raise MediaError(f"video file {video} does not exist")
    result = subprocess.run([ffmpeg(), "-v", "error", "-i", str(video), "-map", "0:v:0", "-frames:v", "1",
                             "-f", "null", "-"], capture_output=True)
    if result.returncode != 0:
        raise MediaError(f"cannot read video {video} (ffmpeg: {_last_line(result.stderr)})")


def mux(video: str | Path, audio: str | Path, out: str | Path) -> Path:
    """`out` = `video`'s picture (not re-encoded) + `audio` as AAC, as long as the shorter of the two."""
    video, audio, out = Path(video), Path(audio), Path(out)
    _check_video(video)
    with atomic_path(out) as tmp:
        result = subprocess.run([ffmpeg(), "-loglevel", "error", "-y", "-i", str(video), "-i", str(audio),
                                 "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *AUDIO_CODEC, "-shortest",
                                 "-movflags", "+faststart", str(tmp)], capture_output=True)
        if result.returncode != 0:
            raise MediaError(f"ffmpeg could not mux {video} and {audio}: {_last_line(result.stderr)}")
    return out


class VideoEncoder:
    """Raw BGR frames in, an H.264 MP4 out (with `audio` muxed in when given), written atomically."""

    def __init__(self, out: Path, size: tuple[int, int], fps: float, audio: Path | None = None):
        width, height = size
        self.out = Path(out)
        self.frames = 0
        command = [ffmpeg(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
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
        """Finish the file and move it into place; MediaError (and no file) if ffmpeg failed."""
        with contextlib.suppress(BrokenPipeError):
            _, errors = self._process.communicate()
        if self._process.returncode != 0 or self.frames == 0:
            reason = _last_line(errors) if self._process.returncode != 0 else "no frames"
            self._file.abort()
            raise MediaError(f"ffmpeg could not export to {self.out}: {reason}")
        return self._file.commit()

    def abort(self) -> None:
        self._process.kill()
        self._process.communicate()
        self._file.abort()

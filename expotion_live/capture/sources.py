"""Where frames come from: a webcam (by index or by name) or a video file.

Every frame carries `t`, a `time.monotonic()` timestamp in seconds. A camera frame is
stamped when it is read; a video-file frame is stamped with the time it is due to be
shown, `t0 + position in the file`, so timestamps stay exact whether the file plays at
its own rate (`realtime=True`, the source sleeps until each frame is due) or as fast as
possible (`realtime=False`, frames are due immediately and the clock runs ahead).

Errors are `CaptureError` with a message that says what to do; a camera that stops
delivering raises `SourceLost`, which `CaptureThread` answers by re-opening it.
Cameras are found through Linux's `/dev/video*` and `/sys/class/video4linux/*/name`.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..settings import CameraSettings

DEMO_VIDEO = Path(__file__).resolve().parents[2] / "assets" / "demo_face.mp4"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")   # also the dataset layout's
SYSFS_V4L = Path("/sys/class/video4linux")
FIRST_FRAME_TRIES = 20          # cameras often return a few empty reads while starting up


class CaptureError(RuntimeError):
    """A source that cannot be opened or read; the message says what to do about it."""


class SourceLost(CaptureError):
    """A camera stopped delivering frames (unplugged, driver reset); it may come back."""


@dataclass(frozen=True)
class CapturedFrame:
    image_bgr: np.ndarray    # (H, W, 3) uint8
    t: float                 # time.monotonic() seconds (see the module docstring for files)
    index: int               # frames delivered by the source so far, from 0; never repeats


class FrameSource(Protocol):
    description: str         # for messages and the UI: "camera 0 (HD Webcam)", "video demo_face.mp4"
    realtime: bool           # frames come at their own pace: a slow consumer must drop, not queue
    fps: float               # nominal frames per second

    def read(self) -> CapturedFrame | None:
        """The next frame (blocking until it is due); None when a non-looping file has ended."""

    def reopen(self) -> None:
        """Try to open the device again after `SourceLost`; raises CaptureError if not (yet) possible."""

    def close(self) -> None: ...


class VideoFileSource:
    """A video file played at its own rate or as fast as possible, optionally looping."""

    def __init__(self, path: str | os.PathLike, realtime: bool = True, loop: bool = False,
                 start_time: float | None = None, clock: Callable[[], float] = time.monotonic):
        """`start_time` is the timestamp of the first frame (default: the clock at the first read)."""
        self.path = Path(path)
        self.realtime, self.loop = realtime, loop
        self.description = f"video {self.path.name}"
        self._clock = clock
        self._t0 = start_time
        self._capture = self._open()
        self.fps = self._capture.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(self.fps) or self.fps <= 0:
            self._capture.release()
            raise CaptureError(f"video file {self.path} has no frame rate: the file is corrupt or not a video")
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))  # as the container declares it
        self.size = (int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._position = 0        # frame index within the current pass through the file
        self._pass_start = 0.0    # seconds of earlier passes (looping)
        self._delivered = 0

    def _open(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise CaptureError(f"video file {self.path} does not exist")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise CaptureError(f"cannot read video file {self.path}: it is truncated, corrupt "
                               f"or in a format OpenCV cannot decode")
        return capture

    def read(self) -> CapturedFrame | None:
        ok, image = self._capture.read()
        if not ok:
            self._check_complete()
            if not self.loop:
                return None
            self._pass_start += self._position / self.fps
            self._capture.release()
            self._capture, self._position = self._open(), 0
            ok, image = self._capture.read()
            if not ok:
                raise CaptureError(f"video file {self.path} could not be read again from the start")
        if self._t0 is None:
            self._t0 = self._clock()
        t = self._t0 + self._pass_start + self._position / self.fps
        if self.realtime:
            delay = t - self._clock()
            if delay > 0:
                time.sleep(delay)
        frame = CapturedFrame(image, t, self._delivered)
        self._position += 1
        self._delivered += 1
        return frame

    def _check_complete(self) -> None:
        """A file that stops well before the frames its header declares is damaged: say so."""
        if self._position == 0:
            raise CaptureError(f"video file {self.path} has no frames OpenCV can decode: "
                               f"it is truncated or corrupt")
        if self.frame_count and self._position < self.frame_count - 1:
            raise CaptureError(f"video file {self.path} ends after {self._position} of its "
                               f"{self.frame_count} frames: it is truncated or corrupt")

    def reopen(self) -> None:
        raise CaptureError(f"{self.description} cannot be re-opened while playing")

    def close(self) -> None:
        self._capture.release()


@dataclass(frozen=True)
class CameraInfo:
    index: int               # the N of /dev/videoN (OpenCV's camera index)
    name: str                # the driver's name for it, e.g. "HD Pro Webcam C920"
    path: str                # /dev/videoN


def list_cameras(sysfs: Path = SYSFS_V4L) -> list[CameraInfo]:
    """Video capture devices, by /dev/video index (Linux; empty elsewhere).

    A webcam usually shows up as two nodes (pictures and metadata); the picture node is
    the one whose sysfs `index` is 0.
    """
    cameras = []
    for node in sorted(sysfs.glob("video*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1):
        if not node.name[5:].isdigit():
            continue
        index_file = node / "index"
        if index_file.exists() and index_file.read_text().strip() not in ("", "0"):
            continue
        name = (node / "name").read_text().strip() if (node / "name").exists() else node.name
        cameras.append(CameraInfo(int(node.name[5:]), name, f"/dev/{node.name}"))
    return cameras


def _camera_list_text() -> str:
    cameras = list_cameras()
    if not cameras:
        return "no cameras are connected"
    return "cameras: " + ", ".join(f"{c.index} ({c.name})" for c in cameras)


class CameraSource:
    """A webcam through OpenCV's V4L2 backend; stamps each frame with the monotonic clock when read."""

    realtime = True

    def __init__(self, index: int, width: int = 640, height: int = 480, fps: float = 30.0,
                 name: str = "", clock: Callable[[], float] = time.monotonic):
        self.index, self.name = index, name
        self.width, self.height, self.fps = width, height, fps
        self.description = f"camera {index}" + (f" ({name})" if name else "")
        self._clock = clock
        self._delivered = 0
        self._capture = self._open()

    def _open(self) -> cv2.VideoCapture:
        path = f"/dev/video{self.index}"
        if sys.platform.startswith("linux"):
            if not os.path.exists(path):
                raise CaptureError(f"there is no camera {self.index} ({path} does not exist); {_camera_list_text()}")
            if not os.access(path, os.R_OK | os.W_OK):
                raise CaptureError(f"permission denied for {path}: add yourself to the 'video' group "
                                   f"(sudo usermod -aG video $USER, then log in again)")
        capture = cv2.VideoCapture(self.index, cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY)
        if not capture.isOpened():
            raise CaptureError(f"{self.description} could not be opened: it is probably busy "
                               f"(close other programs using it) or not a camera")
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)          # keep the driver from queueing stale frames
        for _ in range(FIRST_FRAME_TRIES):
            if capture.grab():
                return capture
            time.sleep(0.05)
        capture.release()
        raise CaptureError(f"{self.description} opened but delivers no frames: it is probably busy "
                           f"(close other programs using it)")

    def read(self) -> CapturedFrame:
        ok, image = self._capture.read()
        if not ok or image is None:
            raise SourceLost(f"{self.description} stopped delivering frames (unplugged?)")
        frame = CapturedFrame(image, self._clock(), self._delivered)
        self._delivered += 1
        return frame

    def reopen(self) -> None:
        """Re-open, by name when known: a re-plugged camera may come back under another index."""
        self._capture.release()
        if self.name:
            match = [c for c in list_cameras() if c.name == self.name]
            if not match:
                raise CaptureError(f"camera {self.name!r} is not connected")
            self.index = match[0].index
        self._capture = self._open()

    def close(self) -> None:
        self._capture.release()


def open_camera_by_name(name: str, settings: CameraSettings) -> CameraSource:
    """The first camera whose name contains `name` (case-insensitive)."""
    cameras = list_cameras()
    match = [c for c in cameras if name.lower() in c.name.lower()]
    if not match:
        raise CaptureError(f"no camera named {name!r}; {_camera_list_text()} "
                           f"(give a camera name, an index or a video file)")
    return CameraSource(match[0].index, settings.width, settings.height, settings.fps, name=match[0].name)


def demo_fallback_notice(spec: str, source: FrameSource) -> str:
    """The line to say when "auto" found no camera and plays the demo video instead ("" otherwise)."""
    if spec.strip() != "auto" or not (isinstance(source, VideoFileSource) and source.path == DEMO_VIDEO):
        return ""
    return (f"no camera found ({_camera_list_text()}): playing the demo video {DEMO_VIDEO.name} instead; "
            f"connect a camera, or pass --camera SPEC or --video FILE")


def video_problem(path: Path) -> str:
    """Why `path` cannot be a video file, in one line, before any work starts ("" when it may be one)."""
    if path.is_dir():
        videos = sorted(p.name for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        inside = f" (it holds {', '.join(videos[:3])}{', ...' if len(videos) > 3 else ''})" if videos else ""
        return f"{path} is a folder, not a video file{inside}; pass one video file"
    if not path.exists():
        return f"video file {path} does not exist"
    return ""


def open_source(spec: str, settings: CameraSettings) -> FrameSource:
    """Open a camera index ("0"), a /dev/videoN path, a camera name, a video file, or "auto".

    "auto" takes the first camera that opens and falls back to the bundled demo video.
    """
    spec = spec.strip()
    if spec == "auto":
        for camera in list_cameras():
            try:
                return CameraSource(camera.index, settings.width, settings.height, settings.fps, name=camera.name)
            except CaptureError:
                continue
        return VideoFileSource(DEMO_VIDEO, realtime=settings.realtime, loop=settings.loop)
    if spec.isdigit() or (spec.startswith("/dev/video") and spec[10:].isdigit()):
        index = int(spec[10:] if spec.startswith("/dev/video") else spec)
        name = next((c.name for c in list_cameras() if c.index == index), "")
        return CameraSource(index, settings.width, settings.height, settings.fps, name=name)
    path = Path(spec).expanduser()
    if path.is_file() or path.suffix.lower() in VIDEO_SUFFIXES or os.sep in spec:
        return VideoFileSource(path, realtime=settings.realtime, loop=settings.loop)
    return open_camera_by_name(spec, settings)

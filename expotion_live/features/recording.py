"""Record tracking to a file and play it back instead of a camera.

A recording is every `FeatureFrame` of a take, in one compressed `.npz` (numpy's zip of
arrays, written atomically): one array per FeatureFrame field, stacked over frames,
times relative to the first frame, plus a format tag. Version 2 added the hands and the
conductor; a version 1 take loads with no hands found. Playback needs no camera and no
MediaPipe, so a performance can be rehearsed, debugged or demonstrated anywhere.

`RecordingPlayer` stands in for `pipeline.TrackingThread`: the same timeline, frame
listeners (called with `image=None`) and `stats()`, so a session does not care which
one feeds it.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .pipeline import FeatureThread, FrameListener, TrackingStats
from .schema import FeatureFrame
from .timeline import FeatureTimeline

FORMAT = "expotion-tracking/2"
LANDMARK_SHAPE = (478, 3)
_FIELDS = [f.name for f in dataclasses.fields(FeatureFrame)]
_ADDED_IN_2 = ("hands_found", "hand_confidence", "hands", "palms", "hand_signals", "conducting", "leading_hand",
               "beat_lag", "beat_confidence", "cutoff", "conduct_bpm", "conduct_beats")


class RecordingError(ValueError):
    """A recording that cannot be written or read; the message names the file and the problem."""


def save_recording(frames: Sequence[FeatureFrame], path: str | os.PathLike) -> Path:
    """Write `frames` to `path` (.npz) atomically; times are stored relative to the first frame."""
    path = Path(path)
    if path.suffix != ".npz":
        raise RecordingError(f"tracking recordings are .npz files, got {path.name}")
    if not frames:
        raise RecordingError(f"nothing to save to {path}: no frames were tracked")
    arrays = {"format": np.array(FORMAT)}
    for name in _FIELDS:
        values = [getattr(frame, name) for frame in frames]
        if name == "landmarks":        # None when no face: zeros, and face_found says which
            values = [np.zeros(LANDMARK_SHAPE, np.float32) if v is None else v for v in values]
        arrays[name] = np.stack([np.asarray(v) for v in values])
    arrays["t"] = arrays["t"] - arrays["t"][0]
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_recording(path: str | os.PathLike) -> list[FeatureFrame]:
    """Read a recording; frame times start at 0. Raises RecordingError for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"tracking recording {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise RecordingError(f"{path} is not a tracking recording (unreadable .npz: {err})") from None
    version = str(arrays.get("format", ""))
    if version not in (FORMAT, "expotion-tracking/1"):
        raise RecordingError(f"{path} is not a {FORMAT} recording (format tag {arrays.get('format')!r})")
    n_frames = len(arrays.get("t", ()))
    template = FeatureFrame(t=0.0)
    if version == "expotion-tracking/1":
        for name in _ADDED_IN_2:
            arrays.setdefault(name, np.stack([np.asarray(getattr(template, name))] * n_frames))
    missing = [name for name in _FIELDS if name not in arrays]
    if missing:
        raise RecordingError(f"{path} lacks {', '.join(missing)}: it was written by another version")
    for name in _FIELDS:
        expected = (n_frames, *np.shape(getattr(template, name) if name != "landmarks" else np.zeros(LANDMARK_SHAPE)))
        if arrays[name].shape != expected:
            raise RecordingError(f"{path}: {name} has shape {arrays[name].shape}, expected {expected} "
                                 f"(recorded with another feature layout)")
    frames = []
    for i in range(n_frames):
        values = {name: arrays[name][i] for name in _FIELDS}
        frame = FeatureFrame(**{name: value.item() if value.ndim == 0 else value for name, value in values.items()})
        if not frame.face_found:
            frame.landmarks = None
        frames.append(frame)
    return frames


class TrackingRecorder:
    """A frame listener that keeps every frame; `save()` writes them. Thread-safe."""

    def __init__(self):
        self._frames: list[FeatureFrame] = []
        self._lock = threading.Lock()

    def __call__(self, frame: FeatureFrame, image: np.ndarray | None = None) -> None:
        with self._lock:
            self._frames.append(frame)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frames(self) -> list[FeatureFrame]:
        """A copy of the frames kept so far."""
        with self._lock:
            return list(self._frames)

    def save(self, path: str | os.PathLike) -> Path:
        return save_recording(self.frames, path)


class RecordingPlayer(FeatureThread):
    """Replays recorded frames into a timeline and listeners, re-stamped on the monotonic clock."""

    def __init__(self, frames: Sequence[FeatureFrame] | str | os.PathLike, timeline: FeatureTimeline,
                 on_frame: Iterable[FrameListener] = (), realtime: bool = True, loop: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.frames = load_recording(frames) if isinstance(frames, (str, os.PathLike)) else list(frames)
        if not self.frames:
            raise RecordingError("the recording has no frames")
        super().__init__(timeline, on_frame, name="tracking-playback")
        self.realtime, self.loop = realtime, loop
        self._clock = clock
        self._played = 0

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame, plus one frame interval (the loop period)."""
        times = [f.t for f in self.frames]
        step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1 / 30
        return times[-1] - times[0] + step

    def calibrate(self) -> bool:
        """Recorded features were calibrated (or not) when recorded: nothing to do; returns False."""
        return False

    def stats(self) -> TrackingStats:
        fps = (len(self.frames) / self.duration) if self.realtime else 0.0
        return TrackingStats(fps, 0.0, self._played, 0, self.listeners.errors, self.status)

    def _run(self) -> None:
        t0, first = self._clock(), self.frames[0].t
        offset = 0.0
        while not self._stop.is_set():
            for recorded in self.frames:
                frame = dataclasses.replace(recorded, t=t0 + offset + recorded.t - first)
                if self.realtime and self._stop.wait(max(0.0, frame.t - self._clock())):
                    return
                if self._stop.is_set():
                    return
                self.timeline.push(frame)
                self._played += 1
                self.listeners.notify(frame, None)
            if not self.loop:
                self.status = "ended"
                return
            offset += self.duration

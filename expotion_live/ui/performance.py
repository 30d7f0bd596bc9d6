"""Record a performance from the window: the overlay video as the performer saw it, plus what was played.

While the session runs, `PerformanceRecorder.on_frame` (a frame listener, tracking thread)
only hands (time, features, image) to a small queue; its writer thread draws the overlay
and encodes one frame per tick of a constant frame rate, taking the tracked frame
nearest each tick, so the video keeps time with the audio even when tracking skips
frames. Tick 0 is `origin`, the moment the session's audio output started, which is
sample 0 of the played WAV (`[audio] out`); `finish` holds the last frame to the WAV's
end (a tracker running behind delivers its last frames late, or not at all) and muxes
the two into one MP4.

Folder: `performances/<date>-<time>/` holding `video.mp4` (no sound), `played.wav`
(written by the session) and `performance.mp4` (both).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from ..features.schema import FeatureFrame
from ..media import MediaError, VideoEncoder, mux
from .overlay import draw_overlay

log = logging.getLogger(__name__)

QUEUE_FRAMES = 8     # frames waiting for the writer; beyond this the newest replaces nothing, it is dropped


def new_performance_folder(parent: Path) -> Path:
    folder = parent / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PerformanceRecorder:
    """Frame listener that films the overlay at a constant rate on its own thread."""

    def __init__(self, folder: Path, fps: float, mirror: bool):
        self.folder = folder
        self.fps = fps
        self.mirror = mirror
        self.origin: float | None = None        # monotonic time of audio sample 0; set by `start`
        self._queue: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._encoder: VideoEncoder | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="performance-writer", daemon=True)

    @property
    def video_path(self) -> Path:
        return self.folder / "video.mp4"

    @property
    def audio_path(self) -> Path:
        return self.folder / "played.wav"

    def start(self, origin: float) -> None:
        self.origin = origin
        self._thread.start()

    def on_frame(self, frame: FeatureFrame, image: np.ndarray | None) -> None:
        """Tracking thread: never blocks; a full queue drops the frame (the next tick repeats a neighbour)."""
        if image is None or self.origin is None:
            return
        try:
            self._queue.put_nowait((frame.t - self.origin, frame, image))
        except queue.Full:
            pass                                 # the writer is behind: a neighbour fills this tick

    def _run(self) -> None:
        previous = None                          # [seconds, frame, image, drawn] of the last frame seen
        try:
            while True:
                queued = self._queue.get()
                if isinstance(queued, float):    # `finish`: hold the last frame until the music's end
                    if previous is not None:
                        self._fill_to(queued, previous, previous)
                    return
                now, frame, image = queued
                if now < 0:
                    continue                     # before the music started
                if self._encoder is None:
                    height, width = image.shape[:2]
                    self._encoder = VideoEncoder(self.video_path, (width, height), self.fps)
                item = [now, frame, image, None]
                self._fill_to(now, previous, item)
                previous = item
        except Exception as err:                 # reported by `finish`; the performance itself goes on
            self._error = err
            log.exception("performance recording failed")

    def _fill_to(self, now: float, previous: list | None, item: list) -> None:
        """Encode every tick up to `now` with the nearer of the frame before and `item` (at `now`)."""
        while (tick := self._encoder.frames / self.fps) <= now:
            chosen = previous if previous is not None and tick - previous[0] < now - tick else item
            if chosen[3] is None:                # drawn once, however many ticks it fills
                chosen[3] = draw_overlay(chosen[2], chosen[1], self.mirror)
            self._encoder.write(chosen[3])

    def finish(self, played_wav: Path | None) -> Path:
        """Stop filming, close the video, and mux it with the played audio into performance.mp4."""
        if self._thread.is_alive():
            self._queue.put(self._end_seconds(played_wav))   # after every frame still queued
            self._thread.join()
        if self._error is not None:
            raise MediaError(f"recording the performance failed: {self._error}")
        if self._encoder is None:
            raise MediaError("no camera frame was recorded")
        video = self._encoder.close()
        if played_wav is None or not Path(played_wav).is_file():
            return video
        return mux(video, Path(played_wav), self.folder / "performance.mp4")

    def _end_seconds(self, played_wav: Path | None) -> float:
        """Where the video ends: the played WAV's length, or now when there is none."""
        import soundfile as sf

        if played_wav is not None and Path(played_wav).is_file():
            info = sf.info(str(played_wav))
            return info.frames / info.samplerate - 1 / self.fps   # the last tick inside the music
        return time.monotonic() - self.origin if self.origin is not None else 0.0

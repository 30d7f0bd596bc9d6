"""The live engine run offline: music for a whole video, conditioned all the way through.

The live app's `ChunkScheduler` plans and joins the chunks (first chunk, chunk length,
40 ms crossfades with a held-back tail) and its source renders them (`MusicGenSource`:
one streamed generation that slides its window, EnCodec re-decodes at the joins), so a
video rendered here sounds as if it had been performed through the app. Differences, all
because the whole video is known in advance:
- no wall clock and no audio device: `ChunkScheduler.render_chunk` on the calling thread,
  as fast as the source renders, and nothing is stretched (nothing waits for the music);
- chunk k's condition window ends at the video frame of its newest position (the
  conditioning contract's `ChunkWindow.newest`, K - 1 frames past the chunk's last code:
  live that frame is "now", a render's lead before the chunk is heard), so each code meets
  the video frame of its own moment, as training's windows place it.
Before the video's first frame and after its last, the edge frame holds, as the live
timeline's window does at a session's start.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..features.schema import FRAME_RATE, TimelineWindow
from .scheduler import ChunkScheduler, ChunkTiming
from .source import ChunkRequest, GenerationParams, MusicSource


class CollectingRing:
    """A `scheduler.SampleRing` that keeps everything written: offline nothing plays, so nothing is read."""

    capacity = sys.maxsize
    read_index = 0
    last_read_time = 0.0

    def __init__(self):
        self.write_index = 0
        self._parts: list[np.ndarray] = []

    def available(self) -> int:
        return self.write_index

    def space(self) -> int:
        return self.capacity

    def write(self, samples: np.ndarray) -> int:
        self._parts.append(np.array(samples, dtype=np.float32))
        self.write_index += len(samples)
        return len(samples)

    def audio(self) -> np.ndarray:
        """(write_index,) float32: everything written, in order."""
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)


def video_window(features: TimelineWindow, end: int, n_frames: int) -> TimelineWindow:
    """The 50 Hz grid frames [end - n_frames, end) of a video's `features` (frame 0 at t = 0);
    outside the video its first or last frame holds."""
    rows = np.clip(np.arange(end - n_frames, end), 0, features.n_frames - 1)   # (T,) the edges hold
    return TimelineWindow(t_end=(end - 1) / FRAME_RATE, face=features.face[rows], motion=features.motion[rows],
                          flow=features.flow[rows], conduct=features.conduct[rows])


def render(source: MusicSource, features: TimelineWindow, params: GenerationParams, timing: ChunkTiming,
           n_frames: int, on_chunk: Callable[[ChunkRequest], None] | None = None) -> np.ndarray:
    """(n_frames * samples per frame,) float32 music for a video whose features are `features`.

    `on_chunk(request)` is called after each chunk is joined (progress, the source's codes).
    The same source, features, params and seed give the same samples.
    """
    if n_frames < 1:
        raise ValueError(f"nothing to render: {n_frames} frames")
    ring = CollectingRing()
    scheduler: ChunkScheduler

    def window_fn(wanted: int) -> TimelineWindow:   # called as the next chunk is planned
        n = timing.frames_of(scheduler.chunks_done)
        newest = scheduler.frames_generated + source.condition_lag_frames(n)   # the video frame of its moment
        return video_window(features, newest + 1, wanted)

    scheduler = ChunkScheduler(source, ring, window_fn, params, timing, realtime=False)
    wanted = timing.samples(n_frames)
    held = timing.overlap_samples                    # each chunk's last samples wait for the next one
    while ring.write_index + held < wanted:
        request = scheduler.render_chunk()
        if on_chunk is not None:
            on_chunk(request)
    scheduler.write_tail()
    return ring.audio()[:wanted]


@dataclass(frozen=True)
class RenderedCodes:
    """A MusicGen render of a whole video: what was played and what it was generated from."""

    audio: np.ndarray           # (n_frames * samples per frame,) float32
    codes: "torch.Tensor"       # (1, K, n_frames) the generated codes, on the CPU
    frame_times: np.ndarray     # (n_frames,) seconds into the video of the frame at each code's position


def render_codes(source, features: TimelineWindow, params: GenerationParams, timing: ChunkTiming, n_frames: int,
                 on_chunk: Callable[[ChunkRequest], None] | None = None) -> RenderedCodes:
    """`render` through a `MusicGenSource`, keeping each chunk's codes and the video frames under them."""
    import torch

    codes, times = [], []

    def collect(request: ChunkRequest) -> None:
        codes.append(source.last_codes)
        times.append(source.last_frame_times)
        if on_chunk is not None:
            on_chunk(request)

    audio = render(source, features, params, timing, n_frames, collect)
    return RenderedCodes(audio, torch.cat(codes, dim=-1)[:, :, :n_frames], np.concatenate(times)[:n_frames])

"""Features of a whole video file on the 50 Hz grid: what `prepare` stores for training.

It runs the live path's parts in a plain loop: every frame of the file through the same
`Tracker.process`, stamped with its position in the file (seconds from 0), pushed into
the same `FeatureTimeline` and resampled by the same `window()`. So a clip played
through the live app gives the features it was trained on (tests check this).
With `calibrate`, the clip starts the way a live session with `[tracking] calibrate_at_start`
does: the tracker's own calibration takes the first frames with a face as the neutral face, and
the frames before it completes are as live plays them (not yet relative to it), so one rule
makes both.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable

from ..capture.sources import VideoFileSource
from ..settings import TrackingSettings
from .schema import FRAME_RATE, TimelineWindow
from .timeline import FeatureTimeline
from .tracker import Tracker


def extract_video(path: str | os.PathLike, tracking_settings: TrackingSettings,
                  progress: Callable[[int, int], None] | None = None,
                  calibrate: bool = False) -> TimelineWindow:
    """The clip on the 50 Hz grid: T = floor(t_last * 50) + 1 frames from the first video frame (t = 0)
    to the last one (t_last); `t_end` is the time of the last grid frame in seconds into the clip.

    `progress(frames_done, frames_total)` is called after each video frame. Raises
    `CaptureError` for a missing, truncated or corrupt file; frames without a face are
    simply `face_found = 0`.
    """
    source = VideoFileSource(path, realtime=False, loop=False, start_time=0.0)
    frames = []
    try:
        with Tracker(tracking_settings) as tracker:
            if calibrate:
                tracker.calibrate()               # as LiveSession.start does before the first frame
            while (captured := source.read()) is not None:
                frame = tracker.process(captured.image_bgr, captured.t)
                frame.landmarks = None            # for drawing only; a long clip need not hold them
                frames.append(frame)
                if progress is not None:
                    progress(captured.index + 1, source.frame_count)
    finally:
        source.close()
    timeline = FeatureTimeline(capacity=len(frames))
    for frame in frames:
        timeline.push(frame)
    last_t = timeline.latest().t
    n_frames = math.floor(last_t * FRAME_RATE + 1e-9) + 1
    return timeline.window(n_frames, t_end=(n_frames - 1) / FRAME_RATE)

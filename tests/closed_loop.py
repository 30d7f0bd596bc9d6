"""Fixtures for the closed-loop proof: tracked face videos whose music switches with a gesture.

A clip is the astronaut face (`testing.face_video`) held still, then swaying from `start` to
`stop`, then still again. Its music is one tone while the face is still and another
while it sways, switching exactly at `start` and `stop` (both on the 20 ms code grid).

The tiny random EnCodec does not re-encode the codes it decodes (every decoded pattern
comes back as one and the same code set), so designed codes cannot pass through a
music file. Real audio can: its encoder maps a quiet low tone and a louder higher one to
two different code sets (they differ in the fourth codebook), so `prepare` makes the
clip's codes from `music.wav` itself, the way a performer's recordings are prepared.
Which code is "still" and which is "moving" is read from the prepared codes, never assumed.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from expotion_live.testing import face_video as demo

FPS = 15.0                  # tracking (about 40 ms a frame here) keeps up with a live video at this rate
SIZE = (320, 240)
SWAY_HZ = 1.25              # a half cycle is 0.4 s: sways of whole half cycles end where they started
SWAY_PX, SWAY_RAD = 28.0, 0.06
SAMPLE_RATE = 32000
STILL_TONE = (30.0, 0.05)   # (Hz, amplitude): the tiny codec's code set for "still"
MOVING_TONE = (200.0, 0.5)  # ... and for "moving"
SNAP = 0.2                  # gesture times are multiples of both a video frame (1/15 s) and a code frame (1/50 s)


def sway(t: float, start: float, stop: float) -> demo.Motion:
    """The warp at `t`: still outside [start, stop), a side-to-side sway inside it."""
    if not start <= t < stop:
        return demo.Motion(0.0, 0.0, 0.0, 0.0, 0.0)
    phase = math.sin(2 * math.pi * SWAY_HZ * (t - start))
    return demo.Motion(0.0, 0.0, 0.0, SWAY_PX * phase, SWAY_RAD * phase)


def write_gesture_video(path: Path, seconds: float, start: float, stop: float) -> Path:
    """An .mp4 of the face, swaying from `start` to `stop` (seconds)."""
    face = demo.astronaut_bgr()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    try:
        for i in range(round(seconds * FPS)):
            writer.write(demo.render_frame(face, sway(i / FPS, start, stop), SIZE))
    finally:
        writer.release()
    return path


def gesture_music(seconds: float, start: float, stop: float) -> np.ndarray:
    """(samples,) float32: the still tone, the moving tone from `start` to `stop`, the still tone again."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    (f_still, a_still), (f_moving, a_moving) = STILL_TONE, MOVING_TONE
    moving = (t >= start) & (t < stop)
    return np.where(moving, a_moving * np.sin(2 * np.pi * f_moving * t),
                    a_still * np.sin(2 * np.pi * f_still * t)).astype(np.float32)


def write_clip(folder: Path, seconds: float, start: float, stop: float) -> Path:
    """A dataset clip folder (video.mp4 + music.wav) as `prepare` reads it."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    write_gesture_video(folder / "video.mp4", seconds, start, stop)
    sf.write(folder / "music.wav", gesture_music(seconds, start, stop), SAMPLE_RATE, subtype="FLOAT")
    return folder


def random_gesture(rng: np.random.Generator, seconds: float) -> tuple[float, float]:
    """(start, stop) on the SNAP grid: a start at a random moment, a sway of 2-5 half cycles ending by
    0.6 s before the end."""
    start = SNAP * int(rng.integers(round(0.6 / SNAP), round((seconds - 1.4) / SNAP) + 1))
    half = 1 / (2 * SWAY_HZ)
    longest = min(5, math.floor((seconds - 0.6 - start) / half + 1e-9))
    return start, start + half * int(rng.integers(2, longest + 1))


def switches(moving: np.ndarray) -> list[tuple[int, bool]]:
    """[(frame, now_moving)]: where a boolean per-frame sequence changes."""
    changes = np.nonzero(moving[1:] != moving[:-1])[0] + 1
    return [(int(i), bool(moving[i])) for i in changes]

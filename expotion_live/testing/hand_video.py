"""A demo video of two rendered hands conducting a known beat, for hand tracking without a camera.

No photograph of a hand ships in the installed packages (the one MediaPipe finds in
matplotlib's `grace_hopper` is her tie), so the hands are drawn: skin-coloured palms
and finger capsules around a 21-point hand skeleton, shaded at the edges, on a plain
background. MediaPipe's palm detector and hand landmark model accept them and put
their landmarks on the drawn joints.

The performer's right hand (on the left of the raw camera image, palm to the camera)
beats: it waits at the top, then bounces down to an ictus at each time of `beat_times`
(a sharp V at the bottom, as conductors beat), and the left hand holds still, open.
After the last beat both hands drop out of the picture: a cut-off. `palm_at` gives the
exact palm position at any time, so tests know the truth.

    python -m expotion_live.testing.hand_video out.mp4 [--tempi 90 120] [--beats 8]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from .face_video import write_video

LEAD_IN = 1.0                # seconds the beating hand waits at the top before the first down stroke
BOTTOM = 0.78                # palm height at the ictus, as a fraction of the picture height (from the top)
STROKE = 0.25                # height of a stroke, fraction of the picture height
OUTRO = 1.5                  # seconds after the last beat; both hands drop out of the picture in DROP
DROP = 0.5
PALM_PIXELS = 80.0           # wrist to middle knuckle, pixels of a 480-high picture
BEATING_X, HOLDING_X, HOLDING_Y = 0.33, 0.70, 0.55
BACKGROUND = 90              # grey level
SKIN_BGR = (150, 180, 225)

# A left hand, palm facing the viewer (thumb on the viewer's left), fingers up, in units of the palm length (wrist at
# the origin, y down): (knuckle or thumb base, bone lengths, direction in radians).
_FINGERS = {
    1: ((-0.35, -0.25), (0.38, 0.32, 0.28), -2.2),
    5: ((-0.32, -0.95), (0.42, 0.25, 0.20), -1.72),
    9: ((-0.05, -1.00), (0.46, 0.29, 0.22), -1.57),
    13: ((0.20, -0.95), (0.43, 0.27, 0.20), -1.42),
    17: ((0.42, -0.82), (0.33, 0.20, 0.18), -1.25),
}
_WIDTHS = {1: 0.17, 5: 0.13, 9: 0.135, 13: 0.125, 17: 0.11}    # finger thickness, palm lengths


def skeleton() -> np.ndarray:
    """(21, 2) MediaPipe-ordered joints of the drawn hand in palm lengths (wrist at 0, 0)."""
    points = np.zeros((21, 2))
    for base, (start, bones, angle) in _FINGERS.items():
        direction = np.array([np.cos(angle), np.sin(angle)])
        points[base] = start
        for k, length in enumerate(bones):
            points[base + k + 1] = points[base + k] + direction * length
    return points


PALM_OFFSET = skeleton()[[0, 5, 9, 13, 17]].mean(axis=0)     # palm centre relative to the wrist


def beat_times(tempi: tuple[float, ...], beats_each: int) -> np.ndarray:
    """Ictus times (seconds): `beats_each` beats at each tempo in turn, after LEAD_IN and one half stroke.

    The first beat of each tempo lands one period of the *new* tempo after the previous beat.
    """
    times, t = [], LEAD_IN
    for k, bpm in enumerate(tempi):
        period = 60.0 / bpm
        if k == 0:
            t += period / 2                      # the first down stroke
        else:
            t += period
        times.extend(t + period * np.arange(beats_each))
        t = times[-1]
    return np.array(times)


def palm_at(t: float, beats: np.ndarray) -> tuple[float, float]:
    """(x, y) of the beating palm centre, fractions of the picture, at time `t`."""
    top = BOTTOM - STROKE
    first_period = beats[1] - beats[0]
    if t < beats[0] - first_period / 2:
        return BEATING_X, top
    if t > beats[-1]:
        return BEATING_X, BOTTOM + (t - beats[-1]) / DROP              # falls out of the picture
    k = max(int(np.searchsorted(beats, t)) - 1, -1)
    if k < 0:
        phase = 1.0 + (t - beats[0]) / first_period                   # the first down stroke: 0.5 .. 1
    else:
        phase = (t - beats[k]) / (beats[k + 1] - beats[k])
    lift = np.sin(np.pi * phase)                                      # 0 at each ictus: a V bounce
    return BEATING_X + 0.02 * np.sin(2 * np.pi * phase), BOTTOM - STROKE * lift


def holding_at(t: float, beats: np.ndarray) -> tuple[float, float]:
    """(x, y) of the holding (left) palm centre: still, until it drops with the other after the last beat."""
    return HOLDING_X, HOLDING_Y + max(0.0, t - beats[-1]) / DROP


def _draw_hand(image: np.ndarray, joints: np.ndarray, scale: float) -> None:
    """Skin over the joints (pixels, (21, 2)), in place: palm polygon, finger capsules, shaded edges."""
    mask = np.zeros(image.shape[:2], np.uint8)
    wrist = joints[0]
    sideways = (joints[17] - joints[5]) / max(np.linalg.norm(joints[17] - joints[5]), 1e-6)
    palm = np.vstack([joints[[1, 5, 9, 13, 17]], wrist - 0.25 * scale * sideways, wrist + 0.25 * scale * sideways])
    cv2.fillConvexPoly(mask, cv2.convexHull(palm.astype(np.int32)), 255)
    for base, width in _WIDTHS.items():
        chain = [0, 1, 2, 3, 4] if base == 1 else [base, base + 1, base + 2, base + 3]
        for a, b in zip(chain[:-1], chain[1:]):
            thickness = max(2, int(width * scale * (0.85 if b == chain[-1] else 1.0)))
            cv2.line(mask, tuple(joints[a].astype(int)), tuple(joints[b].astype(int)), 255, thickness, cv2.LINE_AA)
            cv2.circle(mask, tuple(joints[b].astype(int)), thickness // 2, 255, -1, cv2.LINE_AA)
    soft = cv2.GaussianBlur(mask, (0, 0), 0.02 * scale + 1).astype(np.float32)[..., None] / 255
    depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5)
    shade = 0.75 + 0.25 * np.clip(depth / (0.08 * scale), 0, 1)
    skin = np.array(SKIN_BGR, np.float32) * shade[..., None]
    image[:] = (image * (1 - soft) + skin * soft).clip(0, 255).astype(np.uint8)


def hand_joints(palm_xy: tuple[float, float], size: tuple[int, int], performer_right: bool) -> np.ndarray:
    """(21, 2) pixel joints of a drawn hand whose palm centre is at `palm_xy` (fractions of the picture).

    The skeleton is a left hand seen from the palm side; the performer's right hand, palm to
    the camera, is its mirror image.
    """
    width, height = size
    scale = PALM_PIXELS * height / 480.0
    points = skeleton() - PALM_OFFSET
    if performer_right:
        points[:, 0] *= -1
    return points * scale + np.array([palm_xy[0] * width, palm_xy[1] * height])


def render_frame(t: float, beats: np.ndarray, size: tuple[int, int] = (640, 480),
                 background: np.ndarray | None = None, holding: bool = True) -> np.ndarray:
    """The picture at time `t`: the hands over `background` (BGR, `size`), or over plain grey;
    `holding` False leaves the left hand out (one-handed conducting)."""
    width, height = size
    image = np.full((height, width, 3), BACKGROUND, np.uint8) if background is None else background.copy()
    scale = PALM_PIXELS * height / 480.0
    if holding:
        _draw_hand(image, hand_joints(holding_at(t, beats), size, performer_right=False), scale)
    _draw_hand(image, hand_joints(palm_at(t, beats), size, performer_right=True), scale)
    return image


def make_hand_video(path: str | Path, tempi: tuple[float, ...] = (90.0, 120.0), beats_each: int = 8,
                    fps: float = 30.0, size: tuple[int, int] = (640, 480),
                    background: str | Path | None = None, holding: bool = True) -> tuple[Path, np.ndarray]:
    """Write the clip (.mp4, atomically); returns its path and the true ictus times.

    `background`: a video whose frames (looped, resized to `size`) the hands are drawn
    over, e.g. the face demo, for a performer with face, body and hands; default plain grey.
    `holding` False: the right hand conducts alone.
    """
    path = Path(path)
    beats = beat_times(tempi, beats_each)
    seconds = beats[-1] + OUTRO
    backdrop = _looped_frames(background, size) if background is not None else iter(lambda: None, 0)
    frames = (render_frame(i / fps, beats, size, next(backdrop), holding) for i in range(round(seconds * fps)))
    write_video(path, frames, fps, size)
    return path, beats


def _looped_frames(video: str | Path, size: tuple[int, int]):
    """Frames of `video` resized to `size`, from the start again at its end, forever."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise RuntimeError(f"cannot read the background video {video}")
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = capture.read()
                if not ok:
                    raise RuntimeError(f"the background video {video} has no frames")
            yield cv2.resize(image, size)
    finally:
        capture.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--tempi", type=float, nargs="+", default=[90.0, 120.0])
    parser.add_argument("--beats", type=int, default=8, help="beats at each tempo")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--background", help="a video to draw the hands over (e.g. assets/demo_face.mp4)")
    args = parser.parse_args(argv)
    path, beats = make_hand_video(args.path, tuple(args.tempi), args.beats, args.fps, background=args.background)
    print(f"wrote {path}: {len(beats)} beats at {', '.join(f'{b:g}' for b in args.tempi)} BPM, "
          f"{beats[-1] + OUTRO:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

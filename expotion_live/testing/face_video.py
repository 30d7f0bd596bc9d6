"""The demo face video (the app plays `assets/demo_face.mp4` when there is no camera), made from a real face.

The face is scikit-image's `astronaut` photograph (it ships inside the package). Over
time it is warped as if the head turned, nodded, opened its mouth and swayed:

- turn / nod: the head region is wrapped on a cylinder (vertical axis for a turn,
  horizontal for a nod) and rotated, so the nose moves across the face more than the
  face outline does, which is what a real turn looks like to MediaPipe;
- mouth: the lower lip and jaw are pulled down by a smooth local displacement and the
  gap is filled with a dark mouth interior;
- sway: the whole picture rocks side to side at 1 Hz (two motion-energy peaks per
  second, i.e. 120 BPM), so pose, optical flow and tempo have something to follow.

`SEGMENTS` says when each motion happens (as fractions of the clip) and
`motion_at()` gives the exact warp amounts, so tests can check that the tracked
features move the way the warps say.

    python -m expotion_live.testing.face_video [assets/demo_face.mp4] [--seconds 12] [--fps 30]
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path
from ..capture.sources import DEMO_VIDEO

# Which motion happens when, as fractions of the clip: (name, start, end).
SEGMENTS = (
    ("neutral", 0.00, 0.15),
    ("turn", 0.15, 0.37),
    ("nod", 0.37, 0.59),
    ("mouth", 0.59, 0.80),
    ("sway", 0.80, 1.00),
)

# Geometry of the astronaut photograph (512x512 source pixels), measured once with MediaPipe.
_HEAD_CENTER = (225.0, 122.0)      # between the eyes and the nose
_HEAD_RADII = (66.0, 84.0)         # half-width / half-height of the head region that rotates
_MOUTH_CENTER = (223.5, 146.5)     # between the inner lips
_MOUTH_HALF_WIDTH = 22.0
_CHIN_Y = 178.0
_VIEW_SCALE = 400.0 / 480.0        # source pixels per output pixel of a 640x480 frame (the face fills more of it)
_VIEW_FACE_AT = (0.5, 0.355)       # where the head centre sits, as fractions of the output width and height

_TURN_RAD = 0.55                   # peak head turn (yaw) of the cylinder warp
_NOD_RAD = 0.45                    # peak nod (pitch)
_MOUTH_OPEN_PX = 15.0              # peak jaw drop in source pixels
_SWAY_PX = 28.0                    # peak sideways sway in source pixels
_SWAY_RAD = 0.06                   # peak rocking angle
_SWAY_HZ = 1.0


@dataclass(frozen=True)
class Motion:
    """The warp amounts at one instant (all 0 = the unwarped photograph)."""

    yaw: float          # radians, + = the head turns to the performer's left (image right)
    pitch: float        # radians, + = the head nods up
    mouth: float        # 0-1 of the full jaw drop
    sway_x: float       # source pixels, + = image right
    sway_angle: float   # radians


def segment(name: str, seconds: float) -> tuple[float, float]:
    """(start, end) in seconds of the named motion in a clip of `seconds`."""
    for seg_name, start, end in SEGMENTS:
        if seg_name == name:
            return start * seconds, end * seconds
    raise KeyError(f"no demo segment {name!r}; known: {', '.join(s[0] for s in SEGMENTS)}")


def _cycles(t: float, start: float, end: float, n: int) -> float:
    """sin over `n` full cycles inside [start, end), 0 outside."""
    if not start <= t < end:
        return 0.0
    return math.sin(2 * math.pi * n * (t - start) / (end - start))


def motion_at(t: float, seconds: float) -> Motion:
    """The warp amounts at time `t` of a clip of `seconds`."""
    turn, nod, mouth, sway = (segment(name, seconds) for name in ("turn", "nod", "mouth", "sway"))
    open_phase = _cycles(t, *mouth, n=1)
    sway_phase = math.sin(2 * math.pi * _SWAY_HZ * (t - sway[0])) if sway[0] <= t < sway[1] else 0.0
    return Motion(
        yaw=_TURN_RAD * _cycles(t, *turn, n=1),
        pitch=_NOD_RAD * _cycles(t, *nod, n=1),
        mouth=open_phase * open_phase,           # 0 -> open -> 0, twice in the segment
        sway_x=_SWAY_PX * sway_phase,
        sway_angle=_SWAY_RAD * sway_phase,
    )


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    s = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def _rotate_on_cylinder(coord: np.ndarray, center: float, radius: float, angle: float,
                        weight: np.ndarray) -> np.ndarray:
    """Inverse map of a rotation by `angle` of content wrapped on a cylinder (one axis).

    An output point at angle phi' on the cylinder shows the source point at phi' - angle,
    so content near the axis moves by radius*sin(angle) while the rim barely moves.
    """
    u = np.clip((coord - center) / radius, -0.999, 0.999)
    source_phi = np.clip(np.arcsin(u) - angle, -math.pi / 2, math.pi / 2)
    rotated = center + radius * np.sin(source_phi)
    return coord + weight * (rotated - coord)


def render_frame(face: np.ndarray, motion: Motion, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """One BGR frame of `size` (width, height): the photograph `face` (512x512 BGR) warped by `motion`."""
    width, height = size
    out_x, out_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    # Output -> source photograph: view scale, then the body sway (a rotation about
    # a point below the frame, like a torso rocking on the hips, plus a shift).
    hx, hy = _HEAD_CENTER
    scale = _VIEW_SCALE * 640.0 / width                     # any frame size shows the same view
    x = hx + (out_x - _VIEW_FACE_AT[0] * width) * scale
    y = hy + (out_y - _VIEW_FACE_AT[1] * height) * scale
    pivot_x, pivot_y = hx, 700.0
    cos_a, sin_a = math.cos(motion.sway_angle), math.sin(motion.sway_angle)
    dx, dy = x - pivot_x - motion.sway_x, y - pivot_y
    x, y = pivot_x + cos_a * dx + sin_a * dy, pivot_y - sin_a * dx + cos_a * dy
    # Head turn and nod: cylinder rotations inside a soft ellipse around the head.
    rx, ry = _HEAD_RADII
    radius = np.sqrt(((x - hx) / rx) ** 2 + ((y - hy) / ry) ** 2)
    head_weight = 1.0 - _smoothstep(0.8, 1.1, radius)
    x = _rotate_on_cylinder(x, hx, rx, motion.yaw, head_weight)
    y = _rotate_on_cylinder(y, hy, ry, -motion.pitch, head_weight)
    # Mouth: pull the lower lip and jaw down; the gap above them is the mouth interior.
    mx, my = _MOUTH_CENTER
    drop = _MOUTH_OPEN_PX * motion.mouth
    across = np.exp(-0.5 * ((x - mx) / (0.75 * _MOUTH_HALF_WIDTH)) ** 2)
    below = (y >= my) * (1.0 - _smoothstep(_CHIN_Y, _CHIN_Y + 40.0, y))
    shift = drop * across * below
    interior = ((y >= my) & (y < my + shift) & (np.abs(x - mx) < _MOUTH_HALF_WIDTH)).astype(np.float32)
    y = y - shift
    frame = cv2.remap(face, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT101)
    if drop > 0:
        shade = cv2.GaussianBlur(interior, (5, 5), 0)[..., None]   # soft lip edges
        mouth_colour = np.array([30, 25, 60], np.float32)          # dark red, BGR
        frame = (frame * (1 - shade) + mouth_colour * shade).astype(np.uint8)
    return frame


def astronaut_bgr() -> np.ndarray:
    """scikit-image's astronaut photograph (bundled with the package) as BGR uint8."""
    try:
        from skimage import data
    except ImportError:
        raise RuntimeError("making the demo video needs scikit-image: pip install scikit-image") from None
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _write_h264(path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int]) -> None:
    """Encode with the system ffmpeg's x264: the clip ships in the repository, and x264 keeps it
    far smaller than OpenCV's MPEG-4."""
    width, height = size
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
               "-c:v", "libx264", "-preset", "slow", "-crf", "27", "-pix_fmt", "yuv420p", str(path)]
    encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for frame in frames:
            encoder.stdin.write(frame.tobytes())
    except BrokenPipeError:
        pass                                   # ffmpeg stopped early: its message follows
    _, stderr = encoder.communicate()
    if encoder.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {stderr.decode(errors='replace').strip()}")


def _write_mpeg4(path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int]) -> None:
    """Encode with OpenCV alone (no ffmpeg installed): larger files, same frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


def write_video(path: Path, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int]) -> None:
    """Encode `frames` (BGR, `size`) as an .mp4 at `path`, atomically: x264 when ffmpeg is installed, else MPEG-4."""
    write = _write_h264 if shutil.which("ffmpeg") else _write_mpeg4
    with atomic_path(path) as tmp:
        write(tmp, frames, fps, size)


def make_face_video(path: str | Path, seconds: float = 12.0, fps: float = 30.0,
                    size: tuple[int, int] = (640, 480)) -> Path:
    """Write the demo clip (.mp4, atomically) and return its path."""
    path = Path(path)
    face = astronaut_bgr()
    frames = (render_frame(face, motion_at(i / fps, seconds), size) for i in range(round(seconds * fps)))
    write_video(path, frames, fps, size)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEMO_VIDEO))
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args(argv)
    path = make_face_video(args.path, args.seconds, args.fps)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB, {args.seconds:g} s at {args.fps:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

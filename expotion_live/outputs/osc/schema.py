"""The OSC address schemas, as data: what one processed frame becomes in each mode.

`docs/osc.md` documents every address listed here; keep the two in step. Builders
return plain `(address, [args])` lists so the sender, the docs test and a newcomer
all read the same thing. Values are Python floats/ints/strings (never numpy scalars).

- native: our own schema, every value one address, expression 0-1, angles in radians.
- faceosc: FaceOSC's exact addresses and argument types (port 8338), values mapped
  from our 0-1 scalars onto FaceOSC's typical ranges so existing patches respond.
- wekinator: every input float in one `/wek/inputs` message (port 6448), fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...features.schema import (EXPRESSION_NAMES, HAND_SIDES, HAND_SIGNAL_NAMES, HEAD_NAMES, UPPER_BODY,
                                FeatureFrame)

Message = tuple[str, list]

# Names of the kept pose joints, in `UPPER_BODY` order ("left" is the performer's left).
POSE_JOINT_NAMES = ("nose", "shoulder_left", "shoulder_right", "elbow_left", "elbow_right",
                    "wrist_left", "wrist_right", "hip_left", "hip_right")
assert len(POSE_JOINT_NAMES) == len(UPPER_BODY)


@dataclass(frozen=True)
class MusicState:
    """What the engine is playing, as sent under /music/* with every frame."""

    playing: bool = False
    tempo: float = 0.0                  # BPM the music follows (conducted, else from motion); 0 = unknown
    chunk: int = -1                     # index of the latest chunk that started playing; -1 = none yet
    steering: tuple[str, ...] = ()      # words the prompt steerer added


def native_messages(frame: FeatureFrame, music: MusicState) -> list[Message]:
    """Our schema: found flags always, the rest every frame too (zeros when not found)."""
    messages: list[Message] = [
        ("/face/found", [float(frame.face_found)]),
        ("/face/confidence", [float(frame.face_confidence)]),
    ]
    messages += [(f"/face/{name}", [float(v)]) for name, v in zip(EXPRESSION_NAMES, frame.expression)]
    messages += [(f"/head/{name}", [float(v)]) for name, v in zip(HEAD_NAMES, frame.head)]
    messages += [
        ("/pose/found", [float(frame.pose_found)]),
        ("/pose/confidence", [float(frame.pose_confidence)]),
    ]
    # pose rows are (x, y, z, visibility); x, y image-normalised 0-1
    messages += [(f"/pose/{name}", [float(row[0]), float(row[1]), float(row[3])])
                 for name, row in zip(POSE_JOINT_NAMES, frame.pose)]
    messages += hand_messages(frame)
    messages += [
        ("/motion/energy", [float(frame.motion_energy)]),
        ("/music/playing", [float(music.playing)]),
        ("/music/tempo", [float(music.tempo)]),
        ("/music/chunk", [int(music.chunk)]),
        ("/music/steering", [str(w) for w in music.steering]),
    ]
    return messages


def hand_messages(frame: FeatureFrame) -> list[Message]:
    """/hand/<side>/... every frame (zeros when not found), /conduct/... every frame, and the
    /conduct/beat and /conduct/cutoff events only in the frame that has them."""
    messages: list[Message] = []
    for side, name in enumerate(HAND_SIDES):
        messages += [(f"/hand/{name}/found", [float(frame.hands_found[side])]),
                     (f"/hand/{name}/confidence", [float(frame.hand_confidence[side])])]
        messages += [(f"/hand/{name}/{signal}", [float(v)])
                     for signal, v in zip(HAND_SIGNAL_NAMES, frame.hand_signals[side])]
        messages.append((f"/hand/{name}/landmarks", [float(v) for v in frame.hands[side].reshape(-1)]))
    beats = float(frame.conduct_beats)
    messages += [("/conduct/conducting", [float(frame.conducting)]),
                 ("/conduct/tempo", [float(frame.conduct_bpm)]),
                 ("/conduct/phase", [beats - float(np.floor(beats))])]
    if frame.beat_confidence > 0:
        messages.append(("/conduct/beat", [int(np.floor(beats + 1e-6)), float(frame.beat_confidence),
                                           float(frame.beat_lag)]))
    if frame.cutoff:
        messages.append(("/conduct/cutoff", []))
    return messages


# FaceOSC gesture ranges (ofxFaceTracker units at arm's length, as FaceOSC templates
# expect them): our 0-1 scalar v is sent as low + v * (high - low).
FACEOSC_GESTURES = (
    ("/gesture/mouth/width", "mouth_width", 10.0, 18.0),
    ("/gesture/mouth/height", "mouth_height", 1.0, 7.0),
    ("/gesture/eyebrow/left", "brow_left", 7.0, 9.0),
    ("/gesture/eyebrow/right", "brow_right", 7.0, 9.0),
    ("/gesture/eye/left", "eye_left", 2.5, 3.5),
    ("/gesture/eye/right", "eye_right", 2.5, 3.5),
    ("/gesture/jaw", "jaw", 20.0, 25.0),
)
FACEOSC_NOSTRILS = 7.0          # nostril flare is not tracked: FaceOSC's resting value
FACE_WIDTH_PER_SCALE = 40.0     # pixels of face width per FaceOSC /pose/scale unit (scale ~4 at arm's length)
_FACE_SIDES = (234, 454)        # face-mesh landmarks at the left and right cheek edges


def faceosc_messages(frame: FeatureFrame, image_size: tuple[int, int]) -> list[Message]:
    """FaceOSC's bundle: `/found i` always; pose and gestures only while a face is found."""
    if not frame.face_found or frame.landmarks is None:
        return [("/found", [0])]
    width, height = image_size
    points = frame.landmarks[:, :2] * np.array([width, height], np.float32)   # (478, 2) pixels
    centre = points.mean(axis=0)
    face_width = float(np.linalg.norm(points[_FACE_SIDES[1]] - points[_FACE_SIDES[0]]))
    yaw, pitch, roll = (float(v) for v in frame.head)
    expression = dict(zip(EXPRESSION_NAMES, frame.expression))
    messages: list[Message] = [
        ("/found", [1]),
        ("/pose/scale", [face_width / FACE_WIDTH_PER_SCALE]),
        ("/pose/position", [float(centre[0]), float(centre[1])]),
        ("/pose/orientation", [pitch, yaw, roll]),     # rotation about x, y, z
    ]
    messages += [(address, [low + float(expression[name]) * (high - low)])
                 for address, name, low, high in FACEOSC_GESTURES]
    messages.append(("/gesture/nostrils", [FACEOSC_NOSTRILS]))
    return messages


# Wekinator input order: a fixed vector, so a trained Wekinator project keeps working.
WEKINATOR_INPUTS = ("face_found", *EXPRESSION_NAMES, *HEAD_NAMES, "motion_energy", "pose_found")


def wekinator_messages(frame: FeatureFrame) -> list[Message]:
    """One `/wek/inputs` message holding every input float in `WEKINATOR_INPUTS` order."""
    values = [float(frame.face_found), *(float(v) for v in frame.expression),
              *(float(v) for v in frame.head), float(frame.motion_energy), float(frame.pose_found)]
    return [("/wek/inputs", values)]


# AbletonOSC (listens on 11000): song tempo and transport, sent only on change and at a low rate.
ABLETON_TEMPO = "/live/song/set/tempo"
ABLETON_START = "/live/song/start_playing"
ABLETON_STOP = "/live/song/stop_playing"

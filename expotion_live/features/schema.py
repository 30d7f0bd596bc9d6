"""What the tracker hands downstream: one `FeatureFrame` per processed camera frame.

Every stage after tracking (timeline, adaptor, synth, OSC, UI) reads these names, so
they are defined once here. Ranges are part of the contract and documented in
`docs/osc.md`: expression scalars are 0-1 (0 = neutral/closed, 1 = extreme), head
angles are radians, image coordinates are normalised to 0-1 of the frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# FaceOSC-style expression scalars, each 0-1 (features/face.py EXPRESSION_SCALE); neutral-face
# calibration puts the performer's neutral face at each scale's neutral value.
EXPRESSION_NAMES = (
    "mouth_width", "mouth_height", "smile", "brow_left", "brow_right",
    "eye_left", "eye_right", "jaw",
)
# Head orientation in radians: yaw (turn, + = performer's left), pitch (nod, + = up),
# roll (tilt, + = toward the performer's left shoulder); 0 = facing the camera, or the calibrated neutral.
HEAD_NAMES = ("yaw", "pitch", "roll")
# MediaPipe pose landmark indices kept for the upper body:
# nose, shoulders, elbows, wrists, hips.
UPPER_BODY = (0, 11, 12, 13, 14, 15, 16, 23, 24)
# Face-mesh landmark indices kept as pose-normalised geometry for the adaptor:
# a sparse set over lips, eyes, brows, nose and jaw line (every expression region).
GEOMETRY_LANDMARKS = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 81, 82, 87, 88, 91, 95, 146, 178, 181, 185, 191,
    267, 269, 270, 291, 308, 311, 312, 317, 318, 321, 324, 375, 402, 405, 409, 415,
    33, 133, 145, 153, 158, 159, 160, 144, 362, 263, 374, 380, 385, 386, 387, 373,
    70, 63, 105, 66, 107, 300, 293, 334, 296, 336,
    1, 4, 5, 6, 168, 152, 10, 234, 454, 172, 397, 58, 288, 468, 473,
)
GEOMETRY_DIM = 3 * len(GEOMETRY_LANDMARKS)
# Compact optical-flow field fed to the adaptor's Flow-Embedding CNN: (dx, dy) on a
# coarse grid, in pixels of a 320-wide image per 1/30 s (independent of the camera's rate).
FLOW_SHAPE = (2, 24, 32)
# The flow's precision: prepared clips store it so (hours of flow), and the adaptor reads every flow at it,
# live and offline too, so what it plays meets the values it was trained on.
FLOW_DTYPE = np.float16
# Hands as the performer sees them (not as the raw camera image shows them): row 0 of every
# per-hand array is their left hand, row 1 their right. 21 MediaPipe hand landmarks each
# (0 wrist, 4 thumb tip, 8 index tip, 5/9/13/17 the knuckles at the base of the fingers).
HAND_SIDES = ("left", "right")
HAND_LANDMARKS = 21
# Conductor signals per hand, each 0-1 (features/conductor.py): height in the picture (1 = top),
# stroke size (vertical travel of the last second), openness (0 = fist, 1 = open palm), pinch
# (1 = thumb and index tips touch).
HAND_SIGNAL_NAMES = ("height", "stroke", "openness", "pinch")
# What the timeline carries of the conductor for the music engines: 1 while the hands
# conduct, the conducted tempo (BPM, 0 = none yet), and beats given so far (beat index plus
# the phase into the next one: continuous, never decreasing, so it interpolates).
CONDUCT_NAMES = ("conducting", "bpm", "beats")
CONDUCT_DIM = len(CONDUCT_NAMES)
# The timeline's grid: EnCodec frames per second (32 kHz audio, a frame per 640 samples). The one
# definition, here at the bottom of the data flow: the engine and the model use it, and
# `model.loading.load_codec` refuses a codec with another frame rate.
FRAME_RATE = 50

# Vectors the adaptor sees (paper eq. 2 and 4 project these with low-rank matrices).
FACE_DIM = GEOMETRY_DIM + len(EXPRESSION_NAMES) + len(HEAD_NAMES) + 1   # + face_found
FACE_FOUND_COLUMN = FACE_DIM - 1                                         # face_vector() ends with face_found
MOTION_DIM = 4 * len(UPPER_BODY) + 2                                    # + energy, pose_found
# What an adaptor is conditioned on (the paper's Table 1 ablations): motion = pose, energy and flow.
INPUTS = ("face+motion", "face", "motion")


@dataclass
class FeatureFrame:
    """Everything tracked in one camera frame, stamped with its capture time."""

    t: float                                   # time.monotonic() at capture, seconds
    face_found: bool = False
    face_confidence: float = 0.0               # 0-1, share of the mesh inside the picture
    landmarks: np.ndarray | None = None        # (478, 3) image-normalised, for drawing
    # Landmarks of GEOMETRY_LANDMARKS in the head frame (translation, rotation and scale
    # removed; unit = eye-corner distance), flattened (x, y, z) per landmark.
    geometry: np.ndarray = field(default_factory=lambda: np.zeros(GEOMETRY_DIM, np.float32))
    expression: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPRESSION_NAMES), np.float32))
    head: np.ndarray = field(default_factory=lambda: np.zeros(len(HEAD_NAMES), np.float32))
    pose_found: bool = False
    pose_confidence: float = 0.0               # 0-1, the shoulders' visibility
    # (len(UPPER_BODY), 4): x, y image-normalised 0-1, z (MediaPipe, hip-centred, ~x scale), visibility 0-1
    pose: np.ndarray = field(default_factory=lambda: np.zeros((len(UPPER_BODY), 4), np.float32))
    motion_energy: float = 0.0                 # 0-1, mean flow magnitude, soft-clipped
    flow: np.ndarray = field(default_factory=lambda: np.zeros(FLOW_SHAPE, np.float32))
    # Hands (HAND_SIDES order): found, MediaPipe's handedness score 0-1, the 21 landmarks One-Euro
    # smoothed (x, y image-normalised 0-1, z MediaPipe's depth relative to the wrist, ~x scale),
    # and the palm centre (x, y) unsmoothed: smoothing would delay the bottom of a stroke.
    hands_found: np.ndarray = field(default_factory=lambda: np.zeros(len(HAND_SIDES), bool))
    hand_confidence: np.ndarray = field(default_factory=lambda: np.zeros(len(HAND_SIDES), np.float32))
    hands: np.ndarray = field(default_factory=lambda: np.zeros((len(HAND_SIDES), HAND_LANDMARKS, 3), np.float32))
    palms: np.ndarray = field(default_factory=lambda: np.zeros((len(HAND_SIDES), 2), np.float32))
    hand_signals: np.ndarray = field(default_factory=lambda: np.zeros((len(HAND_SIDES), len(HAND_SIGNAL_NAMES)),
                                                                      np.float32))
    # Conductor (features/conductor.py). A beat (ictus) seen in this frame happened `beat_lag`
    # seconds before `t` (it is recognised once the hand rises again); beat_confidence 0 = no beat.
    conducting: bool = False
    leading_hand: int = -1                     # HAND_SIDES index of the hand that beats; -1 = none
    beat_lag: float = 0.0
    beat_confidence: float = 0.0
    cutoff: bool = False                       # a cut-off gesture ended the conducting in this frame
    conduct_bpm: float = 0.0
    conduct_beats: float = 0.0

    def face_vector(self) -> np.ndarray:
        """(FACE_DIM,) float32: what the adaptor's face branch sees."""
        return np.concatenate([
            self.geometry, self.expression, self.head, [float(self.face_found)],
        ]).astype(np.float32)

    def motion_vector(self) -> np.ndarray:
        """(MOTION_DIM,) float32: upper-body pose plus motion energy (flow goes separately)."""
        return np.concatenate([
            self.pose.reshape(-1), [self.motion_energy, float(self.pose_found)],
        ]).astype(np.float32)

    def conduct_vector(self) -> np.ndarray:
        """(CONDUCT_DIM,) float32 in CONDUCT_NAMES order: what the music engines read of the conductor."""
        return np.array([float(self.conducting), self.conduct_bpm, self.conduct_beats], np.float32)


@dataclass
class TimelineWindow:
    """Features resampled onto the 50 Hz EnCodec frame grid (paper eq. 1 and 3), oldest first.

    This is the condition the generator sees for one chunk, and what `prepare` stores
    for a training clip, so live and offline paths hand the adaptor the same arrays.
    """

    t_end: float            # time.monotonic() of the last frame (live) or seconds into the clip (offline)
    face: np.ndarray        # (T, FACE_DIM) float32
    motion: np.ndarray      # (T, MOTION_DIM) float32
    flow: np.ndarray        # (T, *FLOW_SHAPE) float32
    conduct: np.ndarray | None = None   # (T, CONDUCT_DIM) float32; None = no conductor (zeros)

    def __post_init__(self):
        if self.conduct is None:
            self.conduct = np.zeros((self.face.shape[0], CONDUCT_DIM), np.float32)

    @property
    def n_frames(self) -> int:
        return self.face.shape[0]

    @property
    def expression(self) -> np.ndarray:
        """(T, len(EXPRESSION_NAMES)) 0-1 scalars, sliced out of `face`."""
        return self.face[:, GEOMETRY_DIM:GEOMETRY_DIM + len(EXPRESSION_NAMES)]

    @property
    def energy(self) -> np.ndarray:
        """(T,) motion energy 0-1, sliced out of `motion`."""
        return self.motion[:, 4 * len(UPPER_BODY)]

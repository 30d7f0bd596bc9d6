"""Dense optical flow between consecutive frames (OpenCV DIS): the motion the adaptor's flow CNN sees.

DIS "ultrafast" on a downscaled grey frame costs well under a millisecond and needs no
weights, where the paper's RAFT needs a GPU. The field is average-pooled to
`FLOW_SHAPE` and expressed in a unit that does not depend on the camera: pixels of a
320-wide image per 1/30 s. Motion energy is the mean flow magnitude soft-clipped to 0-1.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .schema import FLOW_SHAPE

REFERENCE_WIDTH = 320          # flow is reported in pixels of an image this wide ...
REFERENCE_DT = 1.0 / 30.0      # ... per this much time
ENERGY_SCALE = 2.0             # mean magnitude (reference units) that gives energy 1 - 1/e


class FlowTracker:
    """Keeps the previous grey frame; each call returns the flow since it and the motion energy."""

    def __init__(self, flow_width: int = 320):
        if flow_width < 32:
            raise ValueError(f"tracking.flow_width must be at least 32 pixels, got {flow_width}")
        self.flow_width = flow_width
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: np.ndarray | None = None
        self._previous_t = 0.0

    def reset(self) -> None:
        self._previous = None

    def process(self, image_bgr: np.ndarray, t: float) -> tuple[np.ndarray, float]:
        """(flow FLOW_SHAPE float32, energy 0-1); zeros for the first frame after a reset."""
        height, width = image_bgr.shape[:2]
        small_size = (self.flow_width, max(1, round(height * self.flow_width / width)))
        grey = cv2.cvtColor(cv2.resize(image_bgr, small_size, interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY)
        previous, previous_t = self._previous, self._previous_t
        self._previous, self._previous_t = grey, t
        if previous is None or previous.shape != grey.shape or t <= previous_t:
            return np.zeros(FLOW_SHAPE, np.float32), 0.0
        field = self._dis.calc(previous, grey, None)                       # (h, w, 2) pixels of the small frame
        field *= (REFERENCE_WIDTH / self.flow_width) * (REFERENCE_DT / (t - previous_t))
        _, grid_h, grid_w = FLOW_SHAPE
        pooled = cv2.resize(field, (grid_w, grid_h), interpolation=cv2.INTER_AREA)  # (grid_h, grid_w, 2)
        magnitude = float(np.mean(np.linalg.norm(field, axis=2)))
        energy = 1.0 - math.exp(-magnitude / ENERGY_SCALE)
        return np.ascontiguousarray(pooled.transpose(2, 0, 1), dtype=np.float32), energy  # (2, grid_h, grid_w)

"""Wires a running session to OSC out: every tracked frame, chunk boundaries, the music state.

Attached to each session by `live.controller.LiveController`:

    feed = OscFeed(sender, settings.camera)
    session.add_frame_listener(feed.on_frame)    # tracking thread
    session.add_chunk_listener(feed.on_chunk)    # chunk boundary, right away
    feed.on_status(music_state(session.status()))   # a few times a second

Each callback only swaps immutable values into the sender (see `sender.py`), so it is
safe from whichever thread calls it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...features.schema import FeatureFrame
from ...settings import CameraSettings
from .schema import MusicState
from .sender import OscSender


class OscFeed:
    def __init__(self, sender: OscSender, camera: CameraSettings):
        self.sender = sender
        self._image_size = (camera.width, camera.height)   # FaceOSC pixels when a frame has no image

    def on_frame(self, frame: FeatureFrame, image: np.ndarray | None) -> None:
        """One bundle per tracked frame. `image` is None when playing back a tracking recording."""
        size = self._image_size if image is None else (image.shape[1], image.shape[0])
        self.sender.send_frame(frame, size)

    def on_chunk(self, chunk_index: int, start_frame: int) -> None:
        self.sender.set_music(dataclasses.replace(self.sender.music, chunk=chunk_index))

    def on_status(self, music: MusicState) -> None:
        self.sender.set_music(music)

    def on_stopped(self) -> None:
        self.sender.set_music(dataclasses.replace(self.sender.music, playing=False))

"""The contract between the chunk scheduler and whatever makes the music.

MusicGen (with or without the adaptor) and the built-in gesture synth both implement
`MusicSource`, so they share one scheduler, ring buffer, crossfade and OSC path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..features.schema import FRAME_RATE, TimelineWindow


@dataclass(frozen=True)
class GenerationParams:
    """Performer-editable controls; a change takes effect at the next chunk."""

    prompt: str
    cfg: float
    temperature: float
    top_k: int
    top_p: float

    @classmethod
    def from_settings(cls, generation) -> GenerationParams:
        """From the [generation] section (settings.GenerationSettings)."""
        return cls(prompt=generation.prompt, cfg=generation.cfg, temperature=generation.temperature,
                   top_k=generation.top_k, top_p=generation.top_p)


@dataclass(frozen=True)
class ChunkRequest:
    index: int              # chunk number since start (0 = first)
    start_frame: int        # first 50 Hz frame of new audio this chunk covers, counted from start
    n_frames: int           # frames of new audio; samples = n_frames * sample_rate // FRAME_RATE
    overlap_samples: int    # extra samples rendered *before* start_frame, crossfaded with the previous chunk's tail
    window: TimelineWindow  # visual condition for this chunk (latest features)
    params: GenerationParams
    plays_at: float | None = None   # when its first new sample should be heard, on the window's clock
                                    # (time.monotonic() live); None: at the window's end (offline)


class MusicSource(Protocol):
    sample_rate: int

    def render(self, request: ChunkRequest) -> np.ndarray:
        """Return float32 mono audio of `overlap_samples + n_frames * sample_rate // FRAME_RATE` samples."""
        ...

    def prepare_next(self, n_frames: int) -> None:
        """Work the next chunk of `n_frames` would start with, done ahead on the generator thread right
        after a chunk, while the ring is full and nothing waits on it (MusicGen: the stream's slide)."""
        ...

"""The contract between the chunk scheduler and whatever makes the music.

MusicGen (with or without the adaptor) and the built-in gesture synth both implement
`MusicSource`, so they share one scheduler, ring buffer, crossfade and OSC path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..features.schema import TimelineWindow


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


@dataclass(frozen=True)
class SourceState:
    """What a source tells the live session about the music it makes; plain values, read from any thread."""

    tempo: float = 0.0                  # BPM the music follows; 0 = none yet
    tempo_locked: bool = False          # the tempo has held: it may lead others (MIDI clock, Link conduct)
    steering_words: tuple[str, ...] = ()  # words the body added to the prompt for the last chunk
    prompt: str = ""                    # the full prompt of the last chunk; "" = no text (the synth) or none yet


class MusicSource(Protocol):
    """Everything the scheduler and the live session may ask of a source."""

    sample_rate: int
    name: str               # what plays, for the performer: "the built-in gesture synth", "MusicGen from DIR"
    takes_adaptor: bool     # whether `load_adaptor` can be called (MusicGen); the session says so otherwise

    def render(self, request: ChunkRequest) -> np.ndarray:
        """Return float32 mono audio of `overlap_samples + n_frames * sample_rate // FRAME_RATE` samples."""
        ...

    def condition_lag_frames(self, n_frames: int) -> int:
        """Frames from the moment a chunk's first new code plays to the newest frame of its condition
        window (MusicGen's adaptor: the conditioning contract's; 0 where the whole chunk follows "now")."""
        ...

    def condition_time(self, request: ChunkRequest) -> float:
        """After `render(request)`: the time (the window's clock) of the frame that conditioned the chunk's first
        new code; control latency runs from there to when that code is heard."""
        ...

    def prepare_next(self, n_frames: int) -> None:
        """Work the next chunk of `n_frames` would start with, done ahead on the generator thread right
        after a chunk, while the ring is full and nothing waits on it (MusicGen: the stream's slide)."""
        ...

    def state(self) -> SourceState:
        """The music's state now; called from status readers' threads, so it only reads plain values."""
        ...

    def load_adaptor(self, path: str | None) -> dict | None:
        """Load an adaptor checkpoint (None removes it); the next chunk uses it. Only if `takes_adaptor`.
        Returns what it was trained under (`ConditionAdaptor.trained`; None when removed)."""
        ...

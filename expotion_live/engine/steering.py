"""Prompt steering: tracked tempo and expression become words added to the performer's prompt.

MusicGen without a trained adaptor only hears text, so the body speaks through words:
"at 96 bpm" (the conducted tempo while the hands conduct), "energetic", "melancholic".
T5 re-encodes the prompt only when the words change, and hysteresis keeps them from
flickering from one chunk to the next.

`read_mood` (valence/arousal from a window), `conducted_beat` and `track_tempo` live here
and are shared with the synth, so both engines read the same performer the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..features.face import EXPRESSION_SCALE
from ..features.schema import CONDUCT_NAMES, EXPRESSION_NAMES, FACE_FOUND_COLUMN, TimelineWindow
from ..features.tempo import TempoTracker, estimate_tempo, frames_needed
from ..features.schema import FRAME_RATE

MOOD_SECONDS = 1.0        # expression and energy are averaged over the most recent second
TEMPO_SECONDS = 6.0       # tempo is read from the most recent seconds: long enough for 60 BPM, short enough to follow
ENERGY_FULL = 0.5         # motion energy that counts as "moving as much as it gets" (arousal 1)

_EXPR = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
_CONDUCTING, _CONDUCTED_BPM, _BEATS = (CONDUCT_NAMES.index(name) for name in ("conducting", "bpm", "beats"))
_NEUTRAL = np.array([EXPRESSION_SCALE[name].neutral for name in EXPRESSION_NAMES], np.float32)


@dataclass(frozen=True)
class Mood:
    valence: float    # -1 (frowning) .. 0 (neutral face) .. +1 (smiling)
    arousal: float    # 0 (still, relaxed) .. 1 (moving a lot, mouth and brows wide open)
    energy: float     # 0-1 motion energy relative to ENERGY_FULL, over the last MOOD_SECONDS


def expression_deviation(expression: np.ndarray) -> np.ndarray:
    """Expression scalars (..., len(EXPRESSION_NAMES)) -> -1..1 around the calibrated neutral face.

    The tracker maps a neutral face to each scalar's `neutral` value (not 0), so 0 here
    is neutral, +1 the scalar's maximum and -1 its minimum (e.g. lip corners pulled down).
    """
    above = (expression - _NEUTRAL) / (1.0 - _NEUTRAL)
    below = (expression - _NEUTRAL) / np.maximum(_NEUTRAL, 1e-6)
    return np.clip(np.where(expression >= _NEUTRAL, above, below), -1.0, 1.0)


def read_mood(window: TimelineWindow) -> Mood:
    """Valence and arousal from the last second of a window.

    Valence: lip corners up (smile) or down (frown), helped by a widened mouth.
    Arousal: mostly motion energy, plus an open mouth and raised brows.
    Frames without a face count as a neutral face.
    """
    recent = max(1, int(MOOD_SECONDS * FRAME_RATE))
    if window.n_frames == 0:
        return Mood(valence=0.0, arousal=0.0, energy=0.0)
    energy = float(np.clip(window.energy[-recent:].mean() / ENERGY_FULL, 0.0, 1.0))
    seen = window.face[-recent:, FACE_FOUND_COLUMN] > 0.5
    if not seen.any():
        return Mood(valence=0.0, arousal=0.8 * energy, energy=energy)
    face = expression_deviation(window.expression[-recent:][seen]).mean(axis=0)
    brows = 0.5 * (face[_EXPR["brow_left"]] + face[_EXPR["brow_right"]])
    valence = float(np.clip(1.5 * face[_EXPR["smile"]] + 0.5 * face[_EXPR["mouth_width"]], -1.0, 1.0))
    arousal = float(np.clip(0.8 * energy + 0.2 * max(face[_EXPR["mouth_height"]], 0.0)
                            + 0.2 * max(brows, 0.0), 0.0, 1.0))
    return Mood(valence=valence, arousal=arousal, energy=energy)


def conducted_beat(window: TimelineWindow) -> tuple[float, float] | None:
    """(BPM, beats given) at the window's end while the hands conduct, else None."""
    if window.n_frames == 0 or window.conduct[-1, _CONDUCTING] < 0.5 or window.conduct[-1, _CONDUCTED_BPM] <= 0:
        return None
    return float(window.conduct[-1, _CONDUCTED_BPM]), float(window.conduct[-1, _BEATS])


def track_tempo(tracker: TempoTracker, window: TimelineWindow) -> int:
    """Update `tracker` from the window; return the tracked BPM.

    While the hands conduct, the conducted tempo; otherwise the periodicity of the recent
    motion energy. A window too short to hold two beats at the slowest tempo leaves the
    tempo as it was.
    """
    conducted = conducted_beat(window)
    if conducted is not None:
        return tracker.follow(conducted[0])
    energy = window.energy[-int(TEMPO_SECONDS * FRAME_RATE):]
    if len(energy) >= frames_needed(FRAME_RATE):
        tracker.update(estimate_tempo(energy, FRAME_RATE))
    return tracker.bpm


class _Band:
    """A value sorted into low / middle / high with hysteresis.

    Enter "high" above `high`, leave it below `high - margin`; the same mirrored for "low".
    """

    def __init__(self, low: float, high: float, margin: float):
        self.low, self.high, self.margin = low, high, margin
        self.state = 0          # -1 low, 0 middle, +1 high

    def update(self, value: float) -> int:
        if self.state == 1 and value < self.high - self.margin:
            self.state = 0
        elif self.state == -1 and value > self.low + self.margin:
            self.state = 0
        if self.state == 0:
            if value > self.high:
                self.state = 1
            elif value < self.low:
                self.state = -1
        return self.state


class PromptSteerer:
    """Window -> words appended to the prompt, stable under small jitter.

    Call `steer` once per chunk: the bands and the named tempo carry over from chunk to chunk,
    so the prompt (and T5's encoding of it) changes only when the performer clearly does.
    """

    VALENCE_WORDS = {-1: "melancholic", 0: "", 1: "uplifting"}
    AROUSAL_WORDS = {-1: "calm", 0: "", 1: "energetic"}

    def __init__(self, tempo_step: int = 4, tempo_margin: float = 1.5):
        self.tempo = TempoTracker()
        self.tempo_step = tempo_step        # named tempo is a multiple of this: small drifts keep the word
        self.tempo_margin = tempo_margin    # BPM the tracked tempo must move past a step before the word changes
        self._named_bpm: int | None = None
        self._valence = _Band(low=-0.35, high=0.35, margin=0.15)
        self._arousal = _Band(low=0.2, high=0.6, margin=0.1)

    def _tempo_word(self, window: TimelineWindow) -> str:
        bpm = track_tempo(self.tempo, window)
        if not self.tempo.locked:
            return ""
        if self._named_bpm is None or abs(bpm - self._named_bpm) > self.tempo_step / 2 + self.tempo_margin:
            self._named_bpm = int(self.tempo_step * np.floor(bpm / self.tempo_step + 0.5))
        return f"at {self._named_bpm} bpm"

    def steer(self, prompt: str, window: TimelineWindow) -> tuple[str, tuple[str, ...]]:
        """Return (prompt with the words appended, the words) for this chunk."""
        mood = read_mood(window)
        candidates = (
            self._tempo_word(window),
            self.AROUSAL_WORDS[self._arousal.update(mood.arousal)],
            self.VALENCE_WORDS[self._valence.update(mood.valence)],
        )
        words = tuple(word for word in candidates if word)
        full = ", ".join((prompt.strip(), *words)) if prompt.strip() else ", ".join(words)
        return full, words

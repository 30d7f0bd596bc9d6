"""Tempo from periodicity: beats per minute out of any envelope sampled at a fixed rate.

`estimate_tempo` reads the performer's motion energy on the 50 Hz timeline (the synth
plays at that tempo, the prompt steerer names it), and evaluation reuses it on audio
onset-strength envelopes, so it is a plain function of an envelope and its rate.
`TempoTracker` turns a stream of per-chunk estimates into a tempo a band could follow:
held when unsure, smoothed, integer, and slow to accept sudden jumps; a conductor's tempo
(`follow`) overrides the estimates while the hands conduct.
`BeatFollower` is the other source of tempo: the beats a conductor gives (ictus times
in, tempo and phase out), quick to follow a new tempo because a conductor means it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .schema import FRAME_RATE

MIN_BPM = 60.0
MAX_BPM = 180.0
_BPM_GRID_STEP = 0.25      # candidate tempi are scored every quarter BPM, then refined
_COMB_MULTIPLES = 4        # a beat period also shows at 2x, 3x, 4x the lag: score them together
_FASTER_OCTAVE_SHARE = 0.8  # prefer 2x / 3x the tempo when its comb score is at least this share of the best
_OCTAVE_TOLERANCE = 0.03   # how far from exactly 2x / 3x a related peak may sit
_DETREND_SECONDS = 1.0     # slower drifts (leaning in, lighting) are not beats; exactly one period at 60 BPM


@dataclass(frozen=True)
class TempoEstimate:
    bpm: float          # MIN_BPM..MAX_BPM
    confidence: float   # 0-1: normalised autocorrelation at the beat period (0 = no periodicity)


def frames_needed(frame_rate: float = FRAME_RATE) -> int:
    """Shortest envelope `estimate_tempo` accepts: two periods of the slowest tempo."""
    return int(np.ceil(2 * 60.0 / MIN_BPM * frame_rate)) + 2


def _autocorrelation(x: np.ndarray) -> np.ndarray:
    """Unbiased, normalised autocorrelation (r[0] = 1) of a zero-mean signal, via the FFT."""
    n = len(x)
    spectrum = np.fft.rfft(x, 2 * n)
    r = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    r /= np.arange(n, 0, -1)          # unbiased: each lag averaged over its own overlap
    return r / r[0]


def _comb_scores(r: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Mean autocorrelation at multiples 1..K of each (fractional) lag, over the multiples that fit.

    Lags beyond three quarters of the signal average too few samples to be trusted.
    """
    max_lag = 0.75 * (len(r) - 1)
    multiples = np.arange(1, _COMB_MULTIPLES + 1)[None, :] * lags[:, None]    # (n_lags, K)
    usable = multiples <= max_lag
    usable[:, 0] = True                                                        # always score the lag itself
    values = np.interp(multiples, np.arange(len(r)), r)
    return (values * usable).sum(axis=1) / usable.sum(axis=1)


def _peak_near(scores: np.ndarray, bpms: np.ndarray, center: float) -> int:
    """Index of the best score within _OCTAVE_TOLERANCE of `center` BPM."""
    near = np.flatnonzero(np.abs(bpms / center - 1.0) <= _OCTAVE_TOLERANCE)
    return int(near[np.argmax(scores[near])])


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def _best_tempo(x: np.ndarray, frame_rate: float) -> tuple[float, float]:
    """(bpm, comb score) of one zero-mean envelope, octave-corrected and refined."""
    bpms = np.arange(MIN_BPM, MAX_BPM + _BPM_GRID_STEP / 2, _BPM_GRID_STEP)
    scores = _comb_scores(_autocorrelation(x), 60.0 * frame_rate / bpms)
    best = int(np.argmax(scores))
    # Octave correction: the same pulse at 3x or 2x the tempo scores nearly as well when it is real.
    slowest = bpms[best]
    for factor in (3, 2):
        if factor * slowest <= MAX_BPM * (1 + _OCTAVE_TOLERANCE):
            faster = _peak_near(scores, bpms, factor * slowest)
            if scores[faster] >= _FASTER_OCTAVE_SHARE * scores[best]:
                best = faster
                break
    bpm = float(bpms[best])
    if 0 < best < len(bpms) - 1:   # parabolic refinement between grid points
        left, mid, right = scores[best - 1:best + 2]
        curvature = left - 2 * mid + right
        if curvature < 0 and mid >= max(left, right):
            bpm += _BPM_GRID_STEP * 0.5 * (left - right) / curvature
    return float(np.clip(bpm, MIN_BPM, MAX_BPM)), float(scores[best])


def estimate_tempo(energy: np.ndarray, frame_rate: float = FRAME_RATE, min_std: float = 1e-3) -> TempoEstimate:
    """Most likely beat rate of `energy` (one value per frame) between 60 and 180 BPM.

    Two views of the envelope are scored: its level (detrended over one second) and its
    changes (absolute first difference, which sharpens motion that stops or reverses
    suddenly); the more periodic view wins. For each view, every candidate tempo on a
    fine grid is scored by the autocorrelation at 1..4 times its period (a comb), which
    resolves fractions of a frame. Octave errors: a signal periodic at lag L is also
    periodic at 2L and 3L, so a faster candidate (x2, x3) wins when its score is close.
    `min_std` is the level's standard deviation below which there is no motion to follow
    (confidence is scaled down towards 0); pass 0 for envelopes of another scale.
    Needs at least two periods of the slowest tempo (`frames_needed`).
    """
    energy = np.asarray(energy, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(energy)):
        raise ValueError("estimate_tempo: the envelope contains NaN or infinite values")
    n = len(energy)
    min_frames = frames_needed(frame_rate)
    if n < min_frames:
        raise ValueError(f"estimate_tempo: need at least {2 * 60 / MIN_BPM:.0f} s of envelope "
                         f"({min_frames} frames at {frame_rate:g} Hz), got {n} frames")
    level = energy - _moving_average(energy, max(1, int(_DETREND_SECONDS * frame_rate)))
    changes = np.abs(np.diff(energy))
    changes -= changes.mean()
    std = float(level.std())
    if std == 0.0:
        return TempoEstimate(bpm=120.0, confidence=0.0)          # a flat line has no tempo
    bpm, score = max((_best_tempo(view, frame_rate) for view in (level, changes) if view.std() > 0),
                     key=lambda estimate: estimate[1])
    motion = std / (std + min_std) if min_std > 0 else 1.0
    return TempoEstimate(bpm=bpm, confidence=float(np.clip(score, 0.0, 1.0) * motion))


class TempoTracker:
    """Per-chunk estimates -> a steady integer tempo.

    - below `min_confidence` the tempo is held (the performer stopped moving);
    - the first confident estimate is taken at once, later ones are smoothed;
    - a jump of more than `jump_ratio` (e.g. an octave flip) must be seen twice in a row;
    - the integer output only moves when the smoothed value is `hysteresis_bpm` away.
    """

    def __init__(self, initial_bpm: float = 100.0, min_confidence: float = 0.3,
                 smoothing: float = 0.5, jump_ratio: float = 0.15, hysteresis_bpm: float = 1.0):
        self.min_confidence = min_confidence
        self.smoothing = smoothing          # share of the distance to the new estimate covered per update
        self.jump_ratio = jump_ratio
        self.hysteresis_bpm = hysteresis_bpm
        self._smoothed = float(initial_bpm)
        self.bpm = int(round(initial_bpm))
        self.locked = False                 # True once a confident estimate has been seen
        self._pending_jump: float | None = None

    def follow(self, bpm: float) -> int:
        """Take a conducted tempo as it is (it is already steady): no confidence gate, no jump check."""
        self.locked = True
        self._smoothed = float(np.clip(bpm, MIN_BPM, MAX_BPM))
        self._pending_jump = None
        self.bpm = int(round(self._smoothed))
        return self.bpm

    def update(self, estimate: TempoEstimate) -> int:
        """Feed one estimate; return the tracked tempo in integer BPM."""
        if estimate.confidence < self.min_confidence:
            self._pending_jump = None
            return self.bpm
        target = estimate.bpm
        if not self.locked:
            self.locked = True
            self._smoothed = target
            self.bpm = int(round(target))
            return self.bpm
        if abs(target / self._smoothed - 1.0) > self.jump_ratio:
            pending, self._pending_jump = self._pending_jump, target
            if pending is None or abs(target / pending - 1.0) > self.jump_ratio:
                return self.bpm                     # not confirmed yet: wait for the next chunk
            self._smoothed = target
        else:
            self._smoothed += self.smoothing * (target - self._smoothed)
        self._pending_jump = None
        if abs(self._smoothed - self.bpm) >= self.hysteresis_bpm:
            self.bpm = int(round(self._smoothed))
        return self.bpm


FOLLOW_INTERVALS = 4        # beat intervals a conducted tempo is fitted over (a steady beat averages out)
TEMPO_CHANGE_RATIO = 0.12   # an interval this far off the current period starts a new tempo at once
LOST_PERIODS = 2.5          # no beat for this many periods: the conductor stopped


class BeatFollower:
    """Ictus times in -> tempo (BPM) and phase out.

    The tempo is the least-squares period of the last FOLLOW_INTERVALS beat intervals, so
    the timing error of single beats averages out. A conductor changes tempo on purpose:
    an interval more than TEMPO_CHANGE_RATIO off the current period drops the older beats,
    so the new tempo is taken from that interval on. An interval of about two periods is
    read as a missed (faint) ictus and the beat in between is counted; so halving the
    tempo keeps the old pulse, on the beat, until the conductor stops and starts again.
    `beats_at(t)` is the number of beats given plus the phase into the next one; it never
    decreases and waits just short of the next beat until that beat comes.
    """

    def __init__(self):
        self._count = 0
        self._given = 0.0           # the latest beats_at(): a reset must not move it back
        self.reset()

    def reset(self) -> None:
        """Forget the tempo (the conductor stopped, or a cut-off); the beat count carries on."""
        self._times: deque[float] = deque(maxlen=FOLLOW_INTERVALS + 1)
        self.period: float | None = None

    @property
    def bpm(self) -> float:
        """The followed tempo; 0 until two beats were given."""
        return 0.0 if self.period is None else 60.0 / self.period

    def beat(self, t: float) -> None:
        """An ictus at time `t` (seconds, increasing)."""
        times = self._times
        if times:
            interval = t - times[-1]
            if interval < 60.0 / MAX_BPM / 2:
                return                                         # a bounce within one beat, not a new one
            if interval > 2 * 60.0 / MIN_BPM:
                times.clear()                                  # too long a pause: start over
                self.period = None
            elif self.period is not None:
                ratio = interval / self.period
                if abs(ratio - 2.0) < 2 * TEMPO_CHANGE_RATIO and interval / 2 >= 60.0 / MAX_BPM:
                    times.append(times[-1] + interval / 2)     # the missed beat
                    self._count += 1
                elif abs(ratio - 1.0) > TEMPO_CHANGE_RATIO:
                    last = times[-1]
                    times.clear()                              # a new tempo: only the newest interval counts
                    times.append(last)
        times.append(t)
        self._count += 1
        if len(times) >= 2:
            stamps = np.asarray(times)
            self.period = float(np.polyfit(np.arange(len(stamps)), stamps - stamps[0], 1)[0])

    def conducting(self, t: float) -> bool:
        """A tempo is known and the last beat is recent."""
        return self.period is not None and t - self._times[-1] <= LOST_PERIODS * self.period

    def beats_at(self, t: float) -> float:
        """Beats given by `t` plus the phase into the next one."""
        if self.period is not None:
            phase = (t - self._times[-1]) / self.period
            self._given = max(self._given, self._count + min(max(phase, 0.0), 0.999))
        self._given = max(self._given, float(self._count))
        return self._given

"""Power-preserving crossfade at chunk joins.

Where two *uncorrelated* signals overlap their powers add, so cos/sin fade curves
(cos^2 + sin^2 = 1: the equal-power crossfade) keep the loudness constant through the
join. But the two sides of our joins are often strongly correlated: the incoming
chunk's overlap is EnCodec re-decoding the same codes the outgoing tail came from. For
correlated signals equal-power fades swell by up to +3 dB mid-join. So the curves are
normalised by the measured correlation r of the two sides: gain k = 1/sqrt(1 + 2 r c s)
gives (k c)^2 + (k s)^2 + 2 r (k c)(k s) = 1, i.e. constant power for any r in 0-1;
r = 0 is exactly the equal-power crossfade, r = 1 exactly the equal-gain one.
"""
from __future__ import annotations

import numpy as np


def equal_power_curves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in), each (n,) float32, fade_out**2 + fade_in**2 == 1 at every sample."""
    phase = (np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)   # sample centres: no exact 0 or 1
    return np.cos(phase).astype(np.float32), np.sin(phase).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equal-length signals, clipped to 0-1 (0 for silence)."""
    energy = float(np.dot(a, a)) * float(np.dot(b, b))
    if energy <= 1e-20:
        return 0.0
    return min(max(float(np.dot(a, b)) / np.sqrt(energy), 0.0), 1.0)


def crossfade(tail: np.ndarray, head: np.ndarray, curves: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Mix the end of the outgoing audio (`tail`) into the start of the incoming (`head`)."""
    fade_out, fade_in = curves
    r = correlation(tail, head)
    gain = 1.0 / np.sqrt(1.0 + 2.0 * r * fade_out * fade_in)   # constant power for correlation r
    return ((tail * fade_out + head * fade_in) * gain).astype(np.float32)


def aligned_start(audio: np.ndarray, tail: np.ndarray, latest: int, search: int) -> int:
    """The start in [latest - search, latest] whose next len(tail) samples best match `tail`.

    Looping a stretch of earlier audio (generation behind real time) joins it to the tail
    at an arbitrary phase; an out-of-phase join cancels in the crossfade and leaves a
    gap. Choosing the start by normalised cross-correlation (as WSOLA time-stretching
    does) makes the two sides of the join agree, so the fade neither dips nor swells.
    """
    earliest = max(0, latest - search)
    n = len(tail)
    region = audio[earliest:latest + n].astype(np.float64)
    scores = np.correlate(region, tail.astype(np.float64), mode="valid")          # (latest - earliest + 1,)
    energy = np.cumsum(np.concatenate([[0.0], region * region]))
    window_energy = energy[n:] - energy[:-n]
    scores = scores / np.sqrt(np.maximum(window_energy, 1e-20))
    return earliest + int(np.argmax(scores))

"""The fast control path: gestures shape the played audio inside the callback, one block late.

The neural path (adaptor -> MusicGen) answers a gesture only at the next chunk; this
path answers within one audio block (DSP latency = one block, ~16 ms at 512/32 kHz):
- loudness follows motion energy (still performer = `min_gain`, full motion = unity);
- a one-pole low-pass opens with an expression scalar (exponential cutoff sweep; the
  coefficient is scaled so that expression 1 bypasses the filter exactly).

Control values are plain floats, latest wins: the tracking thread writes them, the
callback reads them. Both targets are smoothed per sample (a one-pole on the gain and
on the filter coefficient) so a jump in a control never becomes a click ("zipper noise").
The per-sample loop is compiled by numba once, before the stream opens, so the callback
runs it without allocating or touching the interpreter per sample.
"""
from __future__ import annotations

import math
import time

import numpy as np
from numba import njit

from ..features.schema import EXPRESSION_NAMES


class DspControls:
    """Latest control values, written by the tracking thread and read by the audio callback.

    Defaults are "unity gain, filter open", so audio passes unchanged until tracking speaks.
    """

    def __init__(self):
        self.energy = 1.0        # 0-1 motion energy
        self.expression = 1.0    # 0-1 expression scalar driving the filter
        self.stamp = 0.0         # time.monotonic() of the features these values came from

    def set(self, energy: float, expression: float, stamp: float | None = None) -> None:
        self.energy = float(energy)
        self.expression = float(expression)
        self.stamp = time.monotonic() if stamp is None else float(stamp)


@njit(cache=True, nogil=True)
def _gain_lowpass(block, state, gain_target, coef_target, smooth):
    """In place: y += a*(x - y) (one-pole low-pass), then gain; gain and `a` glide to targets.

    state = [gain, a, y]; returns the block's peak absolute output.
    """
    gain, coef, y = state[0], state[1], state[2]
    peak = 0.0
    for i in range(block.shape[0]):
        gain += smooth * (gain_target - gain)
        coef += smooth * (coef_target - coef)
        y += coef * (block[i] - y)
        out = gain * y
        block[i] = out
        if abs(out) > peak:
            peak = abs(out)
    state[0], state[1], state[2] = gain, coef, y
    return peak


def lowpass_coefficient(cutoff_hz: float, sample_rate: int) -> float:
    """One-pole coefficient a = 1 - exp(-2*pi*fc/fs) (a = 1 passes everything)."""
    return 1.0 - math.exp(-2.0 * math.pi * cutoff_hz / sample_rate)


class DspPath:
    """Gain from motion energy and a low-pass from an expression, applied in place per block."""

    def __init__(self, sample_rate: int, block_size: int, *, min_gain: float = 0.35,
                 filter_min_hz: float = 1000.0, filter_max_hz: float = 16000.0,
                 smoothing_ms: float = 10.0, enabled: bool = True):
        if not 0.0 <= min_gain <= 1.0:
            raise ValueError(f"min_gain must be within 0-1, got {min_gain}")
        if not 0.0 < filter_min_hz < filter_max_hz:
            raise ValueError(f"need 0 < filter_min_hz < filter_max_hz, got {filter_min_hz}, {filter_max_hz}")
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.controls = DspControls()
        self.enabled = enabled
        self.min_gain = min_gain
        filter_max_hz = min(filter_max_hz, 0.45 * sample_rate)   # keep the sweep below Nyquist
        self._log_ratio = math.log(filter_max_hz / filter_min_hz)
        self._filter_min_hz = filter_min_hz
        self._coef_open = lowpass_coefficient(filter_max_hz, sample_rate)   # scaled to exactly 1 = bypass
        self._smooth = 1.0 - math.exp(-1.0 / (smoothing_ms * 1e-3 * sample_rate))
        self._state = np.array([1.0, 1.0, 0.0])   # gain, coefficient, filter memory
        self._last_stamp = 0.0
        self.lag_seconds = 0.0                    # features -> the block that applies them (latest)
        self._lag_total = 0.0
        self._lag_count = 0
        _gain_lowpass(np.zeros(4, np.float32), np.array([1.0, 1.0, 0.0]), 1.0, 1.0, 0.5)  # compile now, not in the callback

    def targets(self, energy: float, expression: float) -> tuple[float, float]:
        """(gain, filter coefficient) for control values; both inputs clipped to 0-1."""
        energy = min(max(energy, 0.0), 1.0)
        expression = min(max(expression, 0.0), 1.0)
        gain = self.min_gain + (1.0 - self.min_gain) * energy
        cutoff = self._filter_min_hz * math.exp(self._log_ratio * expression)   # exponential sweep
        return gain, lowpass_coefficient(cutoff, self.sample_rate) / self._coef_open

    def process(self, block: np.ndarray) -> float:
        """Shape `block` in place (callback-safe); return its peak absolute value."""
        controls = self.controls
        stamp = controls.stamp
        if stamp != self._last_stamp:
            self._last_stamp = stamp
            self.lag_seconds = time.monotonic() - stamp
            self._lag_total += self.lag_seconds
            self._lag_count += 1
        if self.enabled:
            gain, coef = self.targets(controls.energy, controls.expression)
        else:
            gain, coef = 1.0, 1.0
        return _gain_lowpass(block, self._state, gain, coef, self._smooth)

    @property
    def gain(self) -> float:
        """The gain the last block ended at (after smoothing): what the performer hears now."""
        return float(self._state[0])

    @property
    def latency_seconds(self) -> float:
        """DSP latency: mean wait for the next block to start, plus the block's own duration."""
        mean_lag = self._lag_total / self._lag_count if self._lag_count else self.lag_seconds
        return mean_lag + self.block_size / self.sample_rate


def expression_index(name: str) -> int:
    """Index of an expression scalar by name, with a clear error naming the valid ones."""
    if name not in EXPRESSION_NAMES:
        raise ValueError(f"unknown expression {name!r}; choose one of {', '.join(EXPRESSION_NAMES)}")
    return EXPRESSION_NAMES.index(name)

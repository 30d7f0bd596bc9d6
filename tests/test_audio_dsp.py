"""The fast DSP path: gain follows motion energy, the low-pass follows an expression, no zipper."""
import numpy as np
import pytest

from expotion_live.audio.dsp import DspPath, expression_index

SR = 32000
BLOCK = 512


def tone(freq, n, sr=SR):
    return np.sin(2 * np.pi * freq * np.arange(n) / sr).astype(np.float32)


def play(dsp, signal):
    out = signal.copy()
    for start in range(0, len(out), BLOCK):
        dsp.process(out[start:start + BLOCK])
    return out


def rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_defaults_pass_audio_unchanged():
    x = tone(440, 8 * BLOCK)
    y = play(DspPath(SR, BLOCK), x)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_gain_follows_motion_energy():
    dsp = DspPath(SR, BLOCK, min_gain=0.25)
    x = tone(200, 40 * BLOCK)
    dsp.controls.set(energy=0.0, expression=1.0)
    still = play(dsp, x)[-10 * BLOCK:]
    dsp.controls.set(energy=1.0, expression=1.0)
    moving = play(dsp, x)[-10 * BLOCK:]
    assert rms(still) / rms(x) == pytest.approx(0.25, rel=0.02)
    assert rms(moving) / rms(x) == pytest.approx(1.0, rel=0.02)


def test_filter_opens_with_expression():
    dsp = DspPath(SR, BLOCK, filter_min_hz=500.0, filter_max_hz=16000.0)
    high = tone(6000, 40 * BLOCK)
    dsp.controls.set(energy=1.0, expression=0.0)
    closed = play(dsp, high)[-10 * BLOCK:]
    dsp.controls.set(energy=1.0, expression=1.0)
    opened = play(dsp, high)[-10 * BLOCK:]
    assert rms(closed) < 0.15 * rms(high)            # one pole at 500 Hz: 6 kHz is ~ -22 dB
    assert rms(opened) > 0.8 * rms(high)


def test_control_jump_is_smoothed_not_a_click():
    dsp = DspPath(SR, BLOCK, min_gain=0.0)
    dc = np.full(4 * BLOCK, 0.5, np.float32)         # constant input: any step in the output is the gain
    dsp.controls.set(energy=0.0, expression=1.0)
    play(dsp, dc)
    dsp.controls.set(energy=1.0, expression=1.0)
    y = play(dsp, dc)
    assert np.abs(np.diff(y)).max() < 0.01           # a raw 0 -> 1 gain jump would step by 0.5
    assert y[-1] == pytest.approx(0.5, abs=1e-3)     # and it does arrive within the block series


def test_latency_is_measured_to_the_applying_block():
    dsp = DspPath(SR, BLOCK)
    dsp.controls.set(energy=0.5, expression=0.5)
    dsp.process(np.zeros(BLOCK, np.float32))
    assert 0.0 <= dsp.lag_seconds < 0.5
    assert dsp.latency_seconds == pytest.approx(dsp.lag_seconds + BLOCK / SR)


def test_unknown_expression_names_the_valid_ones():
    with pytest.raises(ValueError, match="mouth_height"):
        expression_index("nose_wiggle")

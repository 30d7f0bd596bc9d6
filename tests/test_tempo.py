"""Tempo estimation on synthetic periodic motion at known tempi, on audio, and its tracking."""
from __future__ import annotations

import numpy as np
import pytest

from expotion_live.features.tempo import TempoEstimate, TempoTracker, estimate_tempo, frames_needed

RATE = 50


def swaying(bpm: float, seconds: float, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """Motion energy of a performer swaying: one smooth pulse per beat, sensor noise on top."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pulse = np.abs(np.sin(np.pi * bpm / 60 * t + rng.uniform(0, np.pi))) ** 3
    return 0.1 + 0.2 * pulse + rng.normal(0.0, noise, len(t))


def hitting(bpm: float, seconds: float, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """Motion energy of sharp gestures: a 60 ms burst on every beat, with some timing jitter."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    beats = np.arange(0, seconds, 60 / bpm) + rng.normal(0, 0.005, len(np.arange(0, seconds, 60 / bpm)))
    energy = sum(np.exp(-0.5 * ((t - b) / 0.03) ** 2) for b in beats)
    return 0.05 + 0.3 * energy + rng.normal(0.0, noise, len(t))


def test_known_tempi_60_to_180_within_two_bpm():
    errors = {}
    for bpm in range(60, 181, 8):
        for seconds in (4, 8):
            estimate = estimate_tempo(swaying(bpm, seconds, seed=bpm), RATE)
            errors[(bpm, seconds)] = estimate.bpm - bpm
            assert estimate.confidence > 0.5, (bpm, seconds, estimate)
    print("tempo error (BPM) by (true bpm, window s):",
          {k: round(v, 2) for k, v in errors.items()})
    worst = max(errors, key=lambda k: abs(errors[k]))
    assert abs(errors[worst]) <= 2.0, f"worst error {errors[worst]:.2f} BPM at {worst}"


@pytest.mark.parametrize("bpm", [60, 75, 97, 120, 150, 180])
def test_sharp_gestures_with_jitter(bpm):
    estimate = estimate_tempo(hitting(bpm, 8, seed=bpm), RATE)
    assert abs(estimate.bpm - bpm) <= 2.0, estimate


def test_octave_errors_are_resolved_towards_the_pulse():
    # Energy at 180 BPM is also periodic at 90 and 60 BPM; at 120, also at 60.
    assert abs(estimate_tempo(swaying(180, 8), RATE).bpm - 180) <= 2
    assert abs(estimate_tempo(swaying(120, 8), RATE).bpm - 120) <= 2
    # ... and a slow pulse is not doubled: half-beats are not there.
    assert abs(estimate_tempo(swaying(66, 8), RATE).bpm - 66) <= 2


def test_noise_robustness_and_confidence_falls_with_noise():
    confidences = []
    for noise in (0.0, 0.04, 0.08):
        estimates = [estimate_tempo(swaying(bpm, 8, noise=noise, seed=bpm), RATE) for bpm in (72, 108, 144)]
        for bpm, estimate in zip((72, 108, 144), estimates):
            assert abs(estimate.bpm - bpm) <= 3.0, (noise, bpm, estimate)
        confidences.append(np.mean([e.confidence for e in estimates]))
    print("mean confidence at noise 0 / 0.04 / 0.08:", np.round(confidences, 3))
    assert confidences[0] > confidences[1] > confidences[2]


def test_no_motion_has_low_confidence():
    rng = np.random.default_rng(1)
    still = estimate_tempo(np.zeros(400), RATE)
    assert still.confidence == 0.0
    sensor_noise = estimate_tempo(0.01 + rng.normal(0, 0.0005, 400), RATE)    # a still performer, a real camera
    fidgeting = estimate_tempo(0.1 + rng.normal(0, 0.05, 400), RATE)         # random motion, no beat
    assert sensor_noise.confidence < 0.15, sensor_noise
    assert fidgeting.confidence < 0.2, fidgeting
    assert estimate_tempo(swaying(100, 8), RATE).confidence > 0.6


def test_reused_on_an_audio_onset_envelope():
    """Evaluation calls it on librosa's onset strength of generated music."""
    librosa = pytest.importorskip("librosa")
    sr, hop, bpm = 16000, 160, 128
    audio = np.zeros(8 * sr, np.float32)
    click = (np.sin(2 * np.pi * 1000 * np.arange(400) / sr) * np.hanning(400)).astype(np.float32)
    for beat in np.arange(0, 7.8, 60 / bpm):
        start = int(beat * sr)
        audio[start:start + 400] += click
    envelope = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=hop)
    estimate = estimate_tempo(envelope, sr / hop, min_std=0)
    assert abs(estimate.bpm - bpm) <= 1.0, estimate


def test_bad_envelopes_are_clear_errors():
    with pytest.raises(ValueError, match="need at least 2 s"):
        estimate_tempo(np.zeros(frames_needed(RATE) - 1), RATE)
    with pytest.raises(ValueError, match="NaN"):
        estimate_tempo(np.full(200, np.nan), RATE)


def test_tracker_holds_smooths_and_confirms_jumps():
    tracker = TempoTracker(initial_bpm=100)
    assert tracker.update(TempoEstimate(140.0, 0.1)) == 100 and not tracker.locked    # unsure: held
    assert tracker.update(TempoEstimate(90.4, 0.8)) == 90                              # first lock: at once
    for jitter in (90.6, 89.7, 90.3, 89.8):                                            # small jitter: steady
        assert tracker.update(TempoEstimate(jitter, 0.8)) == 90
    assert tracker.update(TempoEstimate(180.0, 0.8)) == 90                             # one octave flip: ignored
    assert tracker.update(TempoEstimate(90.0, 0.8)) == 90
    assert tracker.update(TempoEstimate(130.0, 0.8)) == 90                             # a real change ...
    assert tracker.update(TempoEstimate(131.0, 0.8)) == 131                            # ... confirmed next chunk
    assert tracker.update(TempoEstimate(60.0, 0.05)) == 131                            # performer stops: held
    tracker.update(TempoEstimate(135.0, 0.8))
    assert tracker.update(TempoEstimate(135.0, 0.8)) in (134, 135)                     # small drift: smoothed

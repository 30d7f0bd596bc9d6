"""The built-in gesture synth: music with no model weights, played through the same live engine.

A four-chord loop with pads, bass, arpeggio and synthesised drums:
- tempo follows the conductor's hands while they conduct, and the beat follows their
  ictus: each chunk puts the musical clock's phase on the conducted beat count at the
  window's end (so the music keeps the conductor's beat, one control latency behind, as
  every control is); otherwise tempo follows the performer's motion periodicity
  (`estimate_tempo` on the window's energy, tracked by `TempoTracker`: smoothed, integer,
  held when unsure) and the clock runs free;
- density (which steps of the 16-step bar each voice plays) and loudness follow motion energy;
- mode (major when smiling, minor when frowning, held in between; changed at bar lines)
  and brightness (harmonics, pluck filter) follow the expression's valence and arousal
  (`steering.read_mood`).

Seamless chunks: every note is rendered whole, from its own onset, when it is scheduled
(so its phase and envelope never restart), and kept until it has finished sounding. A
chunk schedules only the steps whose onsets fall in its own new audio, and the musical
clock (beat position) carries over from one chunk to the next. Any stretch of time is
therefore the sum of the same notes whichever chunk renders it, so the `overlap_samples`
lead-in of chunk k+1 is sample-for-sample the tail of chunk k. Controls are baked into
each note when it is scheduled; there is no global gain or filter state that could jump.
Given the seed and the sequence of requests, the output is deterministic.
A whole timeline renders offline through `engine.offline.render`, as every source does.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..features.face import EXPRESSION_SCALE
from ..features.schema import (EXPRESSION_NAMES, FACE_DIM, FACE_FOUND_COLUMN, FLOW_SHAPE, FRAME_RATE, GEOMETRY_DIM,
                               MOTION_DIM, UPPER_BODY, TimelineWindow)
from ..features.tempo import MIN_BPM, TempoTracker
from .source import ChunkRequest, SourceState
from .steering import ENERGY_FULL, conducted_beat, read_mood, track_tempo

STEPS_PER_BEAT = 4                 # sixteenth-note grid
STEPS_PER_BAR = 16
TABLE_SIZE = 2048                  # samples in one period of a wavetable

MAJOR, MINOR = (0, 4, 7), (0, 3, 7)
# One chord per bar: (root in semitones above the key's tonic, triad). Parallel keys, so a
# smile turns the same loop from minor to major and the tonic's third moves (C -> C# in A).
PROGRESSIONS = {
    "major": ((0, MAJOR), (7, MAJOR), (9, MINOR), (5, MAJOR)),     # I V vi IV
    "minor": ((0, MINOR), (8, MAJOR), (3, MAJOR), (10, MAJOR)),    # i VI III VII
}
# When each voice plays: (minimum motion level 0-1, steps of the 16-step bar).
# The groove fills in as the performer moves more: pads and a held bass at rest,
# then arpeggio, kick, hats, backbeat, busier bass and sixteenths.
PATTERNS = {
    "bass": ((0.0, (0,)), (0.3, (6, 8)), (0.6, (2, 4, 10, 12, 14))),
    "arp": ((0.15, (0, 4, 8, 12)), (0.4, (2, 6, 10, 14)), (0.75, (1, 3, 5, 7, 9, 11, 13, 15))),
    "kick": ((0.2, (0, 8)), (0.35, (4, 12)), (0.8, (14,)), (0.9, (10,))),
    "snare": ((0.45, (4, 12)), (0.85, (15,))),
    "hat": ((0.3, (2, 6, 10, 14)), (0.5, (0, 4, 8, 12)), (0.7, (1, 3, 5, 7, 9, 11, 13, 15))),
}
# Peak amplitude of each voice at full loudness (before the soft clipper).
VOICE_GAIN = {"pad": 0.16, "bass": 0.42, "arp": 0.16, "echo": 0.06, "kick": 0.65, "snare": 0.32, "hat": 0.07}
QUIET_DB = -10.0                   # loudness at rest; full motion plays at 0 dB
ARP_ORDERS = ((0, 1, 2, 3, 4, 5), (0, 2, 1, 3, 5, 4), (0, 1, 2, 4, 3, 5, 4, 2), (5, 4, 3, 2, 1, 0))
ECHO_STEPS = 3                     # the arpeggio's dotted-eighth echo
PAD_CENTRE_MIDI = 60               # chord tones are voiced nearest to this (smooth voice leading)
PAD_RELEASE_SECONDS = 0.8          # a pad fades over this while the next bar's pad comes in


@dataclass(frozen=True)
class SynthControls:
    """What the synth plays right now; reported to the session (tempo) and the window."""

    bpm: int
    level: float          # 0-1 motion energy: density and loudness
    valence: float        # -1..1: mode
    arousal: float        # 0-1: brightness
    mode: str             # "major" | "minor"
    brightness: float     # 0-1: harmonics of pads and plucks


@dataclass
class _Note:
    start: int            # absolute sample (since the musical clock started) of the first sample
    audio: np.ndarray     # float32, the whole note including its release
    voice: str            # a key of VOICE_GAIN

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


@functools.lru_cache(maxsize=128)
def _wavetable(n_partials: int, tilt: float) -> np.ndarray:
    """One period of a band-limited tone (partial k at 1/k**tilt), TABLE_SIZE + 1 samples (wraps)."""
    k = np.arange(1, n_partials + 1)[:, None]
    phase = np.arange(TABLE_SIZE + 1)[None, :] / TABLE_SIZE
    table = (np.sin(2 * np.pi * k * phase) / k ** tilt).sum(axis=0)
    return table / np.abs(table).max()


def _oscillator(freq: float, n: int, sample_rate: int, brightness: float, phase: float = 0.0) -> np.ndarray:
    """`n` samples of a wavetable tone: brightness 0 = nearly a sine, 1 = a full sawtooth."""
    brightness = round(float(np.clip(brightness, 0.0, 1.0)), 1)          # bounded table cache
    n_partials = max(1, min(1 + int(round(11 * brightness)), int(0.45 * sample_rate / freq)))
    table = _wavetable(n_partials, 2.0 - brightness)
    position = (freq / sample_rate * np.arange(n) + phase) % 1.0 * TABLE_SIZE
    index = position.astype(np.int64)
    frac = position - index
    return table[index] + frac * (table[index + 1] - table[index])


def _envelope(n: int, sample_rate: int, attack: float, release: float,
              decay: float | None = None, sustain: float = 1.0) -> np.ndarray:
    """Raised-cosine attack from 0 and release to exactly 0 (no clicks), optional exponential decay."""
    env = np.ones(n)
    a = min(n, max(1, int(attack * sample_rate)))
    r = min(n - a, max(1, int(release * sample_rate)))
    env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    if decay is not None:
        t = np.arange(n) / sample_rate
        env *= sustain + (1.0 - sustain) * np.exp(-t / decay)
    env[n - r:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(r) + 1) / r)
    return env


class SynthSource:
    """`MusicSource` that synthesises a gesture-driven groove in numpy (no weights needed)."""

    name = "the built-in gesture synth"
    takes_adaptor = False      # it hears the body directly, not through an adaptor

    def __init__(self, sample_rate: int = 32000, seed: int = 0, tonic_midi: int = 45):
        if sample_rate % FRAME_RATE:
            raise ValueError(f"sample_rate must be a multiple of {FRAME_RATE}, got {sample_rate}")
        self.sample_rate = sample_rate
        self.seed = seed
        self.tonic_midi = tonic_midi            # key of the loop: 45 = A2 (A major / A minor)
        self.tempo = TempoTracker(initial_bpm=96.0)
        self._arp_order = ARP_ORDERS[np.random.default_rng(seed).integers(len(ARP_ORDERS))]
        self._mode = "minor"
        self.controls = self._controls_from(None)
        self._notes: list[_Note] = []
        self._next_sample: int | None = None    # where the previous chunk's new audio ended
        self._beat = 0.0                        # musical clock: beats elapsed at _next_sample
        self._bar_chord: tuple[int, tuple[int, ...]] | None = None   # (root, triad) of the bar being played

    # ---- controls ----------------------------------------------------------------------
    def _controls_from(self, window: TimelineWindow | None) -> SynthControls:
        if window is None or window.n_frames == 0:
            return SynthControls(self.tempo.bpm, 0.0, 0.0, 0.0, self._mode, 0.3)
        track_tempo(self.tempo, window)
        mood = read_mood(window)
        if mood.valence > 0.1:                  # hysteresis: a mode holds until the face clearly changes
            self._mode = "major"
        elif mood.valence < -0.1:
            self._mode = "minor"
        brightness = float(np.clip(0.25 + 0.55 * mood.arousal + 0.2 * max(mood.valence, 0.0), 0.0, 1.0))
        return SynthControls(self.tempo.bpm, mood.energy, mood.valence, mood.arousal, self._mode, brightness)

    def _follow_conducted_beat(self, window: TimelineWindow, plays_at: float | None) -> None:
        """Move the musical clock so its place in the bar is the conductor's when the chunk is heard.

        The conductor's beat count starts on a downbeat (the hands' first beat; beat 0 of a
        Link session, whose bars are its quantum, 4 by default, the synth's bar), so the
        clock is moved by at most half a bar, once on taking the beat and then by a hair.
        The window ends now; the chunk is heard after what is already buffered, by which
        time the conductor's beat has moved on at the conducted tempo.
        """
        conducted = conducted_beat(window)
        if conducted is None:
            return
        bpm, beats = conducted
        if plays_at is not None:
            beats += (plays_at - window.t_end) * bpm / 60.0
        bar = STEPS_PER_BAR / STEPS_PER_BEAT
        moved = self._beat + (beats - self._beat + bar / 2) % bar - bar / 2
        self._beat = moved if moved >= 0 else moved + bar      # steps are counted from 0

    # ---- scheduling --------------------------------------------------------------------
    @staticmethod
    def _steps(voice: str, level: float) -> list[int]:
        return sorted(step for threshold, steps in PATTERNS[voice] if level >= threshold for step in steps)

    def _schedule(self, start: int, end: int) -> None:
        """Create the notes of every step whose onset falls in [start, end) at the current controls."""
        c = self.controls
        samples_per_step = 60.0 * self.sample_rate / c.bpm / STEPS_PER_BEAT
        gain = 10.0 ** (QUIET_DB * (1.0 - c.level) / 20.0)
        step = int(np.ceil(self._beat * STEPS_PER_BEAT - 1e-9))      # first step at or after the clock
        while True:
            onset = start + int(round((step - self._beat * STEPS_PER_BEAT) * samples_per_step))
            if onset >= end:
                break
            self._schedule_step(step, onset, samples_per_step, gain)
            step += 1

    def _schedule_step(self, step: int, onset: int, samples_per_step: float, gain: float) -> None:
        c = self.controls
        bar, in_bar = divmod(step, STEPS_PER_BAR)
        if in_bar == 0 or self._bar_chord is None:            # the mode changes at bar lines only
            progression = PROGRESSIONS[c.mode]
            self._bar_chord = progression[bar % len(progression)]
        root, triad = self._bar_chord
        rng = np.random.default_rng((self.seed, step))            # per-step variation, same in any chunking
        accent = (1.0 if in_bar % 4 == 0 else 0.8) * rng.uniform(0.9, 1.0)
        tonic = self.tonic_midi + 12                              # pads and arpeggio sit an octave above the bass

        def add(voice: str, audio: np.ndarray, at: int = onset, level: float = 1.0) -> None:
            self._notes.append(_Note(at, (audio * (VOICE_GAIN[voice] * gain * level)).astype(np.float32), voice))

        if in_bar == 0:
            self._release_pads(onset)
            bar_samples = int(STEPS_PER_BAR * samples_per_step)
            chord = [PAD_CENTRE_MIDI + ((tonic + root + interval - PAD_CENTRE_MIDI + 6) % 12) - 6
                     for interval in triad]
            if c.brightness > 0.6:
                chord.append(chord[0] + 14)                       # add9: brighter, keeps the mode
            add("pad", self._pad(chord, bar_samples, rng))
        bass_steps = self._steps("bass", c.level)
        if in_bar in bass_steps:
            following = [s for s in bass_steps if s > in_bar] + [STEPS_PER_BAR]
            length = int((following[0] - in_bar) * samples_per_step)
            octave = 12 if (c.level >= 0.6 and in_bar % 4 == 2) else 0
            midi = self.tonic_midi + (root % 12) - 12 + octave
            add("bass", self._bass(_midi_hz(midi), length), level=accent)
        if in_bar in self._steps("arp", c.level):
            tones = [tonic + 12 + (root + interval) % 12 + 12 * octave for octave in (0, 1) for interval in triad]
            midi = tones[self._arp_order[step % len(self._arp_order)] % len(tones)]
            pluck = self._pluck(_midi_hz(midi), c.brightness)
            add("arp", pluck, level=accent)
            add("echo", pluck, at=onset + int(ECHO_STEPS * samples_per_step), level=accent)
        for drum, synth in (("kick", self._kick), ("snare", self._snare), ("hat", self._hat)):
            if in_bar in self._steps(drum, c.level):
                add(drum, synth(rng), level=accent)

    def _release_pads(self, at: int) -> None:
        """Fade out, from `at`, the pads still held there: the next bar's pad takes over.

        A pad holds for the longest bar the tempo tracker allows, so a tempo that slows
        mid-bar (a performer leaving the frame changes the motion it follows) never leaves
        a gap in the music before the next bar's pad.
        """
        release = int(PAD_RELEASE_SECONDS * self.sample_rate)
        fade = 0.5 + 0.5 * np.cos(np.pi * (np.arange(release) + 1) / release)
        for note in self._notes:
            held = at - note.start
            if note.voice == "pad" and 0 <= held < len(note.audio) - release:
                note.audio = note.audio[:held + release]
                note.audio[held:] *= fade

    # ---- voices (each returns a whole note, enveloped from 0 to 0) ---------------------
    def _pad(self, chord: list[int], bar_samples: int, rng: np.random.Generator) -> np.ndarray:
        sr = self.sample_rate
        release = int(PAD_RELEASE_SECONDS * sr)
        longest_bar = int(STEPS_PER_BAR / STEPS_PER_BEAT * 60.0 / MIN_BPM * sr)
        n = max(bar_samples, longest_bar) + release
        out = np.zeros(n)
        for midi in chord:
            for cents in (-7.0, 7.0):                             # two detuned oscillators: a chorus
                freq = _midi_hz(midi + cents / 100)
                out += _oscillator(freq, n, sr, self.controls.brightness * 0.8, rng.uniform())
        attack = min(0.6, 0.3 * bar_samples / sr)
        return out * _envelope(n, sr, attack, release / sr) / len(chord)

    def _bass(self, freq: float, length: int) -> np.ndarray:
        sr = self.sample_rate
        n = max(length - int(0.01 * sr), int(0.05 * sr))          # a short gap before the next note
        t = np.arange(n) / sr
        body = np.sin(2 * np.pi * freq * t)
        growl = _oscillator(freq, n, sr, 0.4 + 0.4 * self.controls.brightness)
        tone = body + 0.6 * growl * np.exp(-t / 0.12)             # filter envelope: bright attack, round sustain
        return tone * _envelope(n, sr, 0.004, 0.03, decay=0.3, sustain=0.55) / 1.6

    def _pluck(self, freq: float, brightness: float) -> np.ndarray:
        sr = self.sample_rate
        n = int(0.45 * sr)
        t = np.arange(n) / sr
        sweep = np.exp(-t / (0.04 + 0.12 * brightness))
        tone = sweep * _oscillator(freq, n, sr, 0.4 + 0.6 * brightness) + (1 - sweep) * np.sin(2 * np.pi * freq * t)
        return tone * _envelope(n, sr, 0.003, 0.05, decay=0.2, sustain=0.0)

    def _kick(self, rng: np.random.Generator) -> np.ndarray:
        sr = self.sample_rate
        n = int(0.4 * sr)
        t = np.arange(n) / sr
        freq = 48.0 + 110.0 * rng.uniform(0.95, 1.05) * np.exp(-t / 0.03)   # pitch drop: the thump
        body = np.sin(2 * np.pi * np.cumsum(freq) / sr)
        return body * _envelope(n, sr, 0.001, 0.05, decay=0.12, sustain=0.0)

    def _snare(self, rng: np.random.Generator) -> np.ndarray:
        sr = self.sample_rate
        n = int(0.25 * sr)
        t = np.arange(n) / sr
        noise = np.diff(rng.standard_normal(n + 1)) / 2.0         # first difference: high-passed noise
        tone = np.sin(2 * np.pi * 190.0 * t) * np.exp(-t / 0.04)
        return (0.7 * noise * np.exp(-t / 0.07) + 0.6 * tone) * _envelope(n, sr, 0.001, 0.03)

    def _hat(self, rng: np.random.Generator) -> np.ndarray:
        sr = self.sample_rate
        n = int(0.08 * sr)
        noise = np.diff(rng.standard_normal(n + 2), n=2) / 4.0    # second difference: only the sizzle
        return noise * _envelope(n, sr, 0.0005, 0.01, decay=0.02, sustain=0.0)

    # ---- MusicSource -------------------------------------------------------------------
    def state(self) -> SourceState:
        """The synth always plays at its tracker's tempo, locked or not."""
        return SourceState(tempo=float(self.tempo.bpm), tempo_locked=self.tempo.locked)

    def load_adaptor(self, path: str | None) -> dict | None:
        raise TypeError(f"{self.name} takes no adaptor; load MusicGen weights first")

    def prepare_next(self, n_frames: int) -> None:
        """Nothing to do ahead: a chunk is rendered from the window it gets."""

    def condition_lag_frames(self, n_frames: int) -> int:
        """Each chunk follows the window's newest values from its first sample."""
        return 0

    def condition_time(self, request: ChunkRequest) -> float:
        return request.window.t_end

    def render(self, request: ChunkRequest) -> np.ndarray:
        """Audio of `overlap_samples` lead-in (the previous chunk's tail again) plus the chunk's new audio."""
        samples_per_frame = self.sample_rate // FRAME_RATE
        start = request.start_frame * samples_per_frame
        end = start + request.n_frames * samples_per_frame
        if request.overlap_samples < 0 or request.n_frames <= 0:
            raise ValueError(f"bad chunk request: n_frames={request.n_frames}, "
                             f"overlap_samples={request.overlap_samples}")
        if request.index == 0 or self._next_sample != start:    # a (re)start, or a gap: a fresh clock
            self._notes, self._beat, self._bar_chord = [], 0.0, None
        self.controls = self._controls_from(request.window)
        self._follow_conducted_beat(request.window, request.plays_at)
        self._schedule(start, end)
        self._beat += (end - start) * self.controls.bpm / (60.0 * self.sample_rate)
        self._next_sample = end

        first = start - request.overlap_samples
        self._notes = [note for note in self._notes if note.end > first]
        mix = np.zeros(end - first)
        for note in self._notes:
            lo, hi = max(note.start, first), min(note.end, end)
            if lo < hi:
                mix[lo - first:hi - first] += note.audio[lo - note.start:hi - note.start]
        return np.tanh(mix).astype(np.float32)                 # soft clip, sample by sample: same in any chunking


def synthetic_performance(seconds: float, bpm: float, level: float, smile: float = 0.0,
                          noise: float = 0.02, seed: int = 0) -> TimelineWindow:
    """A made-up performer for rehearsal without a camera, demos and tests.

    They sway with one motion-energy pulse per beat at `bpm`, move with mean energy
    `level` * ENERGY_FULL (so `read_mood` sees energy `level`), and hold a neutral face
    except the lip corners: `smile` -1 (frown) .. 0 (neutral) .. 1 (full smile).
    Only the fields the synth and the steerer read are filled.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * FRAME_RATE)
    t = np.arange(n) / FRAME_RATE
    pulse = 0.4 + np.abs(np.sin(np.pi * bpm / 60.0 * t + rng.uniform(0, np.pi))) ** 3
    energy = level * ENERGY_FULL * pulse / pulse.mean() + rng.normal(0.0, noise, n)
    motion = np.zeros((n, MOTION_DIM), np.float32)
    motion[:, 4 * len(UPPER_BODY)] = np.clip(energy, 0.0, 1.0)
    motion[:, 4 * len(UPPER_BODY) + 1] = 1.0                                   # pose found
    neutral = np.array([EXPRESSION_SCALE[name].neutral for name in EXPRESSION_NAMES])
    expression = neutral.copy()
    i = EXPRESSION_NAMES.index("smile")
    expression[i] += smile * (1.0 - neutral[i]) if smile >= 0 else smile * neutral[i]
    face = np.zeros((n, FACE_DIM), np.float32)
    face[:, GEOMETRY_DIM:GEOMETRY_DIM + len(EXPRESSION_NAMES)] = expression
    face[:, FACE_FOUND_COLUMN] = 1.0
    return TimelineWindow(t_end=seconds, face=face, motion=motion, flow=np.zeros((n, *FLOW_SHAPE), np.float32))

"""The conditioning contract: which video frame conditions which code, written once.

Training, the live stream, the offline render and evaluation all ask this module where a
chunk's condition window sits; none of them works it out on its own.

Positions. The decoder reads a delayed sequence (`delay_pattern`): position 0 is the start
token, and the logits at position p predict frame p of codebook 0 (frame p - k of
codebook k). Video frame p of the stream (the same 20 ms as audio frame p) conditions
position p: the adaptor's prefix frame t sits at position `first + t`, and its positional
rows (H0^p, pos_l, z_pos) are rows `first + t` too, so a frame at a given position means
the same thing in a window of any length (a conductor's beat-aligned chunks, another
chunk or context setting). Positions count from the stream's (re)start; a slide
(`StreamLayout.slide`) re-anchors codes and prefix together at position 0.

A chunk. Before it the stream holds `done` complete frames; it adds `n`. Its last decode
step writes position `done + n + K - 1` (the last frame's finest codebook), so that is
where the window's newest frame sits (`ChunkWindow.newest`). The window reaches back to
position 0: the prefix spans the stream since its (re)start, at most the adaptor's
`max_frames` (an adaptor refuses a longer stream). Under a look-ahead limit the prefix is
causal, so a frame's prefix state depends only on the frames before it: it is computed
once, when its position is first reached, and kept until a slide (`ConditionAdaptor.fill`
streams it, every chunk computing only its new positions). Offline the newest frame is the
video's frame of that position; live it is the performer now, so a code frame is heard
`newest - done` frames plus the playback lead after the moment at its position
(`lag_frames`).

    K = 4, done = 10, n = 5:                         newest = 10 + 5 + 4 - 1 = 18
    positions:     0  1 ... 10 11 12 13 14 15 16 17 18
    window:        f0 f1    f10 ...           f18          frames = 19, first = 0
    new codes:              10 11 12 13 14               (codebook 0 of frame p at p)
    new prefix rows (streamed):  the last chunk's newest was 13: rows 14..18

Every shape a session meets (`session_windows`) is what training cuts its pieces to.

Reach. The code at position p attends to prefix frames from p - look-back to p + look-ahead
(`AdaptorConfig`; the adaptor's docstring says why each is bounded). Live, no frame after
the newest exists, and a memory of 0.2 s lets the music go of a gesture that has stopped.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

LIVE_LOOK_AHEAD = 0    # frames after its own moment a code attends to: live, none exist yet
LIVE_LOOK_BACK = 10    # frames before it: a movement stopped 0.2 s ago no longer plays


@dataclass(frozen=True)
class ChunkWindow:
    """Where one chunk's condition window sits on the decoder's positions (module docstring)."""

    done: int       # complete frames in the stream before the chunk
    n: int          # frames the chunk adds
    frames: int     # video frames in the window
    first: int      # decoder position (and positional row) of the window's frame 0; >= 0
    K: int          # codebooks

    @property
    def codes(self) -> int:
        """Complete frames once the chunk is done (its codes and the context before them)."""
        return self.done + self.n

    @property
    def newest(self) -> int:
        """The position of the window's newest frame: the chunk's last decode step."""
        return self.first + self.frames - 1

    @property
    def lag_frames(self) -> int:
        """Frames from the chunk's first new code frame's position to the newest frame's."""
        return self.newest - self.done

    def footprint(self) -> int:
        """Frames of a clip the chunk covers: the codes and the K - 1 positions after them."""
        return self.newest + 1

    def up_to(self, position: int) -> "ChunkWindow":
        """The part of this window at positions <= `position` (a slide's prefill needs no more)."""
        return ChunkWindow(done=self.done, n=self.n, frames=max(0, position - self.first + 1), first=self.first,
                           K=self.K)


def chunk_window(done: int, n: int, K: int, max_frames: int) -> ChunkWindow:
    """The window of a chunk of `n` frames after `done` (module docstring's rule)."""
    newest = done + n + K - 1
    frames = min(max_frames, newest + 1)
    return ChunkWindow(done=done, n=n, frames=frames, first=newest - frames + 1, K=K)


@dataclass(frozen=True)
class StreamLayout:
    """The stream's positions: `window` of them, and `context` frames kept by a slide."""

    window: int
    context: int
    K: int

    def fits(self, done: int, n: int) -> bool:
        """Whether `n` more frames after `done` fit without a slide."""
        return done + n + self.K <= self.window

    def slide(self) -> int:
        """Complete frames the stream holds after a slide (the newest `context`)."""
        return self.context

    def check(self, n: int) -> None:
        if n + self.context + self.K + 1 > self.window:
            raise ValueError(f"{n} frames after {self.context} of context do not fit a stream "
                             f"window of {self.window} positions")

    def slide_window(self, n: int, max_frames: int) -> ChunkWindow:
        """The prefix a slide prefills its context under: the window of the `n`-frame chunk after the
        slide, up to the last context position. Under a look-ahead limit (causal prefix) its frames'
        states are the ones that chunk's window gives them, so the context is prefilled as trained."""
        return chunk_window(self.slide(), n, self.K, max_frames).up_to(self.slide())

    def windows(self, lengths: Iterable[int], max_frames: int) -> Iterator[ChunkWindow]:
        """The windows of chunks of these lengths, from the stream's start, sliding as the stream does."""
        done = 0
        for n in lengths:
            self.check(n)
            if not self.fits(done, n):
                done = self.slide()
            yield chunk_window(done, n, self.K, max_frames)
            done += n


def session_windows(layout: StreamLayout, first_chunk: int, chunk: int, max_frames: int,
                    conducted: bool = True, seed: int = 0) -> list[ChunkWindow]:
    """Every window shape a live session makes, distinct, in order of first appearance.

    The set lengths from the stream's start through one slide's cycle (after the first
    slide the stream repeats it); with `conducted`, also sessions whose chunks end on a
    conductor's beat (`scheduler.frames_to_a_beat`: half to twice `chunk`), drawn with
    `seed`, so every window length and offset a conductor makes is trained.
    """
    import numpy as np

    def cycle_length() -> int:     # chunks until the stream has slid twice: a whole cycle after the first slide
        done, slides, count = 0, 0, 0
        for n in [first_chunk] + [chunk] * (4 * layout.window):
            if not layout.fits(done, n):
                slides, done = slides + 1, layout.slide()
                if slides == 2:
                    return count
            done, count = done + n, count + 1
        return count

    sessions = [[first_chunk] + [chunk] * cycle_length()]
    if conducted:
        rng = np.random.default_rng(seed)
        low, high = max(1, chunk // 2), 2 * chunk
        while high + layout.context + layout.K + 1 > layout.window and high > low:
            high -= 1
        for _ in range(8):
            sessions.append([first_chunk] + rng.integers(low, high + 1, 2 * cycle_length()).tolist())
    seen: dict[ChunkWindow, None] = {}
    for lengths in sessions:
        for window in layout.windows(lengths, max_frames):
            seen.setdefault(window)
    return list(seen)


# What an adaptor was trained under, recorded in its adaptor.json ("trained"): the settings that
# shape its windows and its features. Playing it under others feeds it windows or features it never saw.
WINDOW_KEYS = ("first_chunk_seconds", "chunk_seconds", "context_seconds", "window_seconds")
FEATURE_KEYS = ("min_cutoff", "beta", "d_cutoff", "flow_width")


def feature_settings(tracking) -> dict:
    """The [tracking] keys that shape the features (prepare's cache records them too)."""
    return {key: getattr(tracking, key) for key in FEATURE_KEYS}


def recorded_settings(generation, tracking: dict) -> dict:
    """{"generation": {...}, "tracking": {...}}: the window keys of `generation` and the feature settings."""
    return {"generation": {key: getattr(generation, key) for key in WINDOW_KEYS}, "tracking": dict(tracking)}


def setting_differences(trained: dict, generation, tracking, windows: bool = True) -> list[str]:
    """`section.key (trained X, now Y)` for each recorded setting these differ in ("trained" as
    `recorded_settings` wrote it; an adaptor saved before settings were recorded gives one entry).
    `windows=False` leaves the generation keys out (the paper's windows do not follow them)."""
    if "generation" not in trained or "tracking" not in trained:
        return ["the settings it was trained under (not recorded: an older adaptor)"]
    now = recorded_settings(generation, feature_settings(tracking))
    sections = ("generation", "tracking") if windows else ("tracking",)
    return [f"{section}.{key} (trained {trained[section][key]!r}, now {value!r})"
            for section in sections for key, value in now[section].items()
            if key in trained[section] and trained[section][key] != value]


def as_trained(generation, trained: dict):
    """`generation` (settings.GenerationSettings) with the window keys an adaptor was trained under."""
    import dataclasses

    return dataclasses.replace(generation, **trained.get("generation", {}))


def differences_warning(where: str, differences: list[str]) -> str | None:
    """The one line to print when an adaptor is played under other settings than it was trained under."""
    if not differences:
        return None
    return (f"warning: {where} feeds the adaptor differently from its training: {'; '.join(differences)}; "
            f"set them back (or retrain) for it to play as it learned")

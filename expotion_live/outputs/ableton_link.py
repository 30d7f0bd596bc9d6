"""Ableton Link: share tempo and beat with every Link app on the network (docs/midi.md, "Ableton Link").

Two modes (settings `link.mode`):
- follow: the Link session conducts the music. Each chunk's window carries the session's
  tempo and its beat count at the window's end in the conductor's columns
  (`TimelineWindow.conduct`), exactly as the hands would: the synth carries that beat on
  to when the chunk is heard (`ChunkRequest.plays_at`) and plays at that tempo, and the
  prompt steerer names the tempo.
- conduct: the tempo tracked from the performer (hands, else motion), once confident,
  becomes the session's tempo; `TempoLead` holds a change back until it has lasted, so a
  pause or a stumble never drags the band. From then on the music is conducted by the
  session as in follow mode, so it stays on the band's beat: the tempo it plays is the one
  it gave the band, and inside the dead band it no longer drifts against it. The performer's
  tempo is read from the window before the session conducts it (`track_tempo`, the rule the
  music sources use), so the session never hears its own tempo back as the performer's.

Threads: aalink needs an asyncio loop; the peer lives on its own loop thread. Reading
the session state and setting its tempo are safe from any thread (Link's app-thread API).
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from ..engine.steering import track_tempo
from ..features.schema import CONDUCT_NAMES, TimelineWindow
from ..features.tempo import TempoTracker
from ..settings import CHOICES, LinkSettings

MODES = CHOICES["link.mode"]
_CONDUCTING, _BPM, _BEATS = (CONDUCT_NAMES.index(name) for name in ("conducting", "bpm", "beats"))


class LinkError(RuntimeError):
    """Link cannot be joined as configured; one line saying what to change."""


@dataclass(frozen=True)
class LinkStatus:
    """The Link session as the window and status show it."""

    mode: str
    peers: int          # other Link apps in the session
    tempo: float        # session BPM
    beat: float         # beats since the session's origin
    phase: float        # position in the bar, 0 to quantum
    quantum: float      # beats per bar


class AbletonLink:
    """One Link peer, enabled from construction to `close`."""

    def __init__(self, bpm: float, quantum: float):
        aalink = binding()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ableton-link", daemon=True)
        self._thread.start()

        async def join():        # aalink binds to the running loop it is created on
            link = aalink.Link(bpm)
            link.quantum = quantum
            link.enabled = True
            return link

        self._link = asyncio.run_coroutine_threadsafe(join(), self._loop).result(timeout=5.0)

    @property
    def peers(self) -> int:
        return int(self._link.num_peers)

    @property
    def tempo(self) -> float:
        return float(self._link.tempo)

    @tempo.setter
    def tempo(self, bpm: float) -> None:
        self._link.tempo = float(bpm)

    @property
    def beat(self) -> float:
        return float(self._link.beat)

    @property
    def phase(self) -> float:
        return float(self._link.phase)

    def close(self) -> None:
        self._link.enabled = False
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2.0)


class TempoLead:
    """Conduct mode's gate: a tracked tempo moves the session only after differing from it by
    `change_bpm` for `hold_seconds` (a candidate that wanders by `change_bpm` starts over)."""

    def __init__(self, change_bpm: float, hold_seconds: float):
        self.change_bpm = change_bpm
        self.hold_seconds = hold_seconds
        self._candidate: tuple[float, float] | None = None    # (bpm, since when)

    def update(self, bpm: float, session_bpm: float, now: float) -> float | None:
        """The tempo to give the session now, or None. `bpm` 0 = not confident (holds nothing)."""
        if bpm <= 0 or abs(bpm - session_bpm) < self.change_bpm:
            self._candidate = None
            return None
        if self._candidate is None or abs(bpm - self._candidate[0]) >= self.change_bpm:
            self._candidate = (bpm, now)
            return None
        if now - self._candidate[1] < self.hold_seconds:
            return None
        self._candidate = None
        return bpm


def follow_window(window: TimelineWindow, bpm: float, beats: float) -> TimelineWindow:
    """The window with the Link session as its conductor at its last frame (the window is a copy)."""
    window.conduct[-1, [_CONDUCTING, _BPM, _BEATS]] = (1.0, bpm, beats)
    return window


class LinkSync:
    """The session's side of Link: a peer plus the mode's policy."""

    def __init__(self, settings: LinkSettings, bpm: float = 120.0):
        if settings.mode not in MODES[1:]:
            raise LinkError(f"link.mode must be one of {', '.join(MODES)}, got {settings.mode!r}")
        self.mode = settings.mode
        self.quantum = settings.quantum
        self.peer = AbletonLink(bpm, settings.quantum)
        self._lead = TempoLead(settings.conduct_change_bpm, settings.conduct_hold_seconds)
        self._performer = TempoTracker()     # conduct: the performer's own tempo, as the music would track it

    def window(self, window: TimelineWindow) -> TimelineWindow:
        """Conduct the window with the session's tempo and its beat at the window's end (`t_end`,
        on the monotonic clock): in follow mode always, in conduct mode once the performer's
        tempo has locked (after leading the session with it). Called once per chunk."""
        if self.mode == "conduct":
            bpm = track_tempo(self._performer, window)
            if not self._performer.locked:
                return window            # nothing to lead with yet: the music keeps its own time
            self.lead(bpm, window.t_end)
        bpm, beat, now = self.peer.tempo, self.peer.beat, time.monotonic()
        return follow_window(window, bpm, beat + (window.t_end - now) * bpm / 60.0)

    def lead(self, bpm: float, now: float) -> None:
        """Conduct mode: give the session the performer's confident tempo (0 = none) once it has held
        (`window` calls it with the performer's tempo)."""
        if self.mode != "conduct":
            return
        tempo = self._lead.update(bpm, self.peer.tempo, now)
        if tempo is not None:
            self.peer.tempo = tempo

    @property
    def description(self) -> str:
        """One line for the operator: the session joined."""
        peers = self.peer.peers
        return (f"Ableton Link ({self.mode}): joined, {peers} peer{'' if peers == 1 else 's'}, "
                f"{self.peer.tempo:.1f} BPM, {self.quantum:g} beats a bar")

    def status(self) -> LinkStatus:
        return LinkStatus(self.mode, self.peer.peers, self.peer.tempo, self.peer.beat, self.peer.phase, self.quantum)

    def close(self) -> None:
        self.peer.close()


def open_link(settings: LinkSettings) -> tuple[LinkSync | None, str]:
    """(LinkSync, "") when Link is on and joins; (None, one-line reason) when it is on and cannot."""
    if settings.mode == "off":
        return None, ""
    try:
        return LinkSync(settings), ""
    except LinkError as err:
        return None, f"no Ableton Link: {err}"


def binding():
    """The aalink module, or LinkError naming what to install."""
    try:
        import aalink
    except ImportError:
        raise LinkError("Ableton Link needs aalink: pip install aalink") from None
    return aalink

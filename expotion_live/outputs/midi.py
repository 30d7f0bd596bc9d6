"""MIDI out: tracked signals as control changes, mouth-opening notes and MIDI clock (docs/midi.md).

DAWs map MIDI natively (Ableton's MIDI map, Logic's smart controls), while OSC needs a
bridge; so the same signals that go out as OSC also go out here, on one port.

Threads: `MidiOut.on_frame` runs on the tracking thread (a frame listener); the clock
runs on its own thread and asks `music()` for (playing, tempo), which must only read
plain values. Sends from the two threads share one lock, held only around `port.send`.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..features.schema import EXPRESSION_NAMES, HEAD_NAMES, FeatureFrame
from ..settings import MidiSettings
from .midi_listeners import listener_count

HEAD_RANGE = math.pi / 4          # head angles of +-45 degrees span the controller; 0 rad is its middle
MOUTH_OPEN, MOUTH_CLOSED = 0.45, 0.25   # mouth_height hysteresis: a note starts above one, ends below the other
CLOCKS_PER_BEAT = 24              # MIDI beat clock resolution (the MIDI 1.0 spec)
CLOCKS_PER_BAR = 4 * CLOCKS_PER_BEAT   # a late listener is told the position on a 4/4 bar line
LISTENER_POLL_SECONDS = 0.25      # how soon a DAW that connects to the virtual port is noticed
SIGNALS = (*EXPRESSION_NAMES, *HEAD_NAMES, "motion_energy", "face_found", "pose_found", "conducting")


class MidiError(RuntimeError):
    """MIDI out cannot be used as configured; one line saying what to change."""


@dataclass(frozen=True)
class Controller:
    signal: str
    cc: int
    fine: bool = False        # 14-bit: coarse value on `cc`, fine value on `cc + 32`


def parse_map(entries) -> tuple[Controller, ...]:
    """`SIGNAL:CC` or `SIGNAL:CC/14` entries (settings `midi.map`) -> controllers; one bad entry fails all."""
    controllers, used = [], set()
    for entry in entries:
        signal, sep, number = entry.strip().partition(":")
        number, slash, bits = number.partition("/")
        if not sep or signal not in SIGNALS:
            raise MidiError(f"MIDI map entry {entry!r}: expected SIGNAL:CC with SIGNAL one of {', '.join(SIGNALS)}")
        if not number.strip().isdigit() or not 0 <= int(number) <= 119 or (slash and bits.strip() != "14"):
            raise MidiError(f"MIDI map entry {entry!r}: CC must be 0-119 (120-127 are channel mode messages), "
                            f"optionally /14 for 14 bits")
        controller = Controller(signal, int(number), bool(slash))
        if controller.fine and controller.cc >= 32:
            raise MidiError(f"MIDI map entry {entry!r}: a 14-bit controller needs CC 0-31 (its fine half is CC+32)")
        ccs = {controller.cc, controller.cc + 32} if controller.fine else {controller.cc}
        if ccs & used:
            raise MidiError(f"MIDI map entry {entry!r}: CC {min(ccs & used)} is already mapped")
        used |= ccs
        controllers.append(controller)
    return tuple(controllers)


def signal_values(frame: FeatureFrame) -> dict[str, float]:
    """Every mappable signal of a frame as 0-1 (head angles centred on 0.5)."""
    values = dict(zip(EXPRESSION_NAMES, (float(v) for v in frame.expression)))
    values.update((name, 0.5 + float(v) / (2 * HEAD_RANGE)) for name, v in zip(HEAD_NAMES, frame.head))
    values.update(motion_energy=float(frame.motion_energy), face_found=float(frame.face_found),
                  pose_found=float(frame.pose_found), conducting=float(frame.conducting))
    return {name: min(max(v, 0.0), 1.0) for name, v in values.items()}


class MidiMapper:
    """Frames -> the MIDI messages worth sending: a controller only when its value changed and
    at most `rate_hz` times a second (its latest value goes out once the interval has passed)."""

    def __init__(self, settings: MidiSettings):
        self._mido = _mido()
        self.controllers = parse_map(settings.map)
        self.channel = settings.channel - 1
        self.interval = 1.0 / settings.rate_hz
        self.note = settings.note
        self._sent: dict[int, tuple[int, float]] = {}     # cc -> (value sent, frame time)
        self._sounding = False

    def messages(self, frame: FeatureFrame) -> list:
        values = signal_values(frame)
        out = []
        for c in self.controllers:
            scale = 16383 if c.fine else 127
            value = round(values[c.signal] * scale)
            last = self._sent.get(c.cc)
            if last is not None and (last[0] == value or frame.t - last[1] < self.interval):
                continue
            self._sent[c.cc] = (value, frame.t)
            if c.fine:    # coarse first: a receiver resets the fine half when the coarse one arrives
                out.append(self._cc(c.cc, value >> 7))
                out.append(self._cc(c.cc + 32, value & 127))
            else:
                out.append(self._cc(c.cc, value))
        if self.note:
            out += self._mouth_note(values["mouth_height"] if frame.face_found else 0.0)
        return out

    def _cc(self, cc: int, value: int):
        return self._mido.Message("control_change", channel=self.channel, control=cc, value=value)

    def _mouth_note(self, mouth: float) -> list:
        if not self._sounding and mouth >= MOUTH_OPEN:
            self._sounding = True
            return [self._mido.Message("note_on", channel=self.channel, note=self.note,
                                       velocity=max(1, round(127 * mouth)))]
        if self._sounding and mouth <= MOUTH_CLOSED:
            return self.release()
        return []

    def release(self) -> list:
        """The note off owed to a sounding note (when the mouth closes, the face is lost or MIDI stops)."""
        if not self._sounding:
            return []
        self._sounding = False
        return [self._mido.Message("note_off", channel=self.channel, note=self.note, velocity=0)]


def _mido():
    """The messages' library, or MidiError naming what to install."""
    try:
        import mido
    except ImportError:
        raise MidiError("MIDI out needs mido: pip install mido python-rtmidi") from None
    return mido


def backend():
    """(mido, rtmidi): messages and the ports they go out on, or MidiError naming what to install."""
    mido = _mido()
    try:
        import rtmidi
    except ImportError:
        raise MidiError("MIDI out needs python-rtmidi for its ports (no wheel for this Python yet, "
                        "or not installed): pip install python-rtmidi") from None
    return mido, rtmidi


# settings `midi.api` -> rtmidi's name for it (None: rtmidi picks the system's own)
APIS = {"auto": None, "alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}
ALSA_HELP = ('Linux needs the ALSA sequencer, /dev/snd/seq: `modprobe snd-seq`, '
             'or with a JACK server running (JACK or PipeWire) set [midi] api = "jack"')
JACK_HELP = 'start a JACK server (jackd, or PipeWire\'s JACK), or set [midi] api = "alsa"'


def open_port(name: str, virtual: bool, api: str = "auto"):
    """A mido output port: a new virtual one named `name` (its client too), or the existing
    output whose name contains it."""
    mido, rtmidi = backend()
    if not virtual:
        names = list_ports(api)
        matches = [n for n in names if name.lower() in n.lower()]
        if not matches:
            raise MidiError(f"no MIDI output port named {name!r}; ports: {', '.join(names) or 'none'}")
        name = matches[0]
    try:
        return mido.open_output(name, virtual=virtual, api=_api(api, rtmidi),
                                client_name=name if virtual else None)
    except (OSError, NotImplementedError, rtmidi.RtMidiError) as err:    # Windows: no virtual ports
        kind = "virtual MIDI port" if virtual else "MIDI port"
        raise MidiError(f"cannot open {kind} {name!r}: {_reason(err)}") from None


def list_ports(api: str = "auto") -> list[str]:
    """Output ports the MIDI backend sees (MidiError without a backend)."""
    mido, rtmidi = backend()
    try:
        return mido.get_output_names(api=_api(api, rtmidi))
    except (OSError, rtmidi.RtMidiError) as err:
        raise MidiError(f"no MIDI backend: {_reason(err)}") from None


def _api(api: str, rtmidi) -> str | None:
    """rtmidi's name of `midi.api`, or MidiError when this build of python-rtmidi lacks it."""
    name = APIS[api]
    compiled = rtmidi.get_compiled_api()
    if name is not None and getattr(rtmidi, f"API_{name}") not in compiled:
        have = ", ".join(rtmidi.get_api_name(a) for a in compiled)
        raise MidiError(f'[midi] api = "{api}" is not built into this python-rtmidi (it has: {have})')
    return name


def _reason(err: Exception) -> str:
    """The backend's error in one line, with what its own words leave out."""
    line = str(err).splitlines()[0]
    if "alsa" in line.lower():
        return f"{line} ({ALSA_HELP})"
    if "jack" in line.lower():
        return f"{line} ({JACK_HELP})"
    return line


class MidiOut:
    """One port: controllers and notes from every frame, clock from the music's tempo."""

    def __init__(self, settings: MidiSettings, music: Callable[[], tuple[bool, float]]):
        """Opens the port now; MidiError (one line) when the map or the port cannot be used.
        `music()` -> (playing, BPM the music plays at, 0 = none yet): what the clock follows."""
        self.mapper = MidiMapper(settings)      # a bad map fails before a port is opened
        self.port = open_port(settings.port, settings.virtual, settings.api)
        kind = "virtual port" if settings.virtual else "port"
        self.description = f"MIDI out on {kind} {self.port.name!r} ({self.port.api})"
        self.messages_sent = 0
        self._music = music
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clock = None
        if settings.clock:
            # only a virtual port is connected to by others, after it opened; an existing port is ours from the start
            self._listeners, self._close_listeners = (
                listener_count(self.port.api, settings.port, settings.port) if settings.virtual
                else ((lambda: None), (lambda: None)))
            self._clock = threading.Thread(target=self._run_clock, name="midi-clock", daemon=True)
            self._clock.start()

    def on_frame(self, frame: FeatureFrame, image=None) -> None:
        self._send(self.mapper.messages(frame))

    def _send(self, messages) -> None:
        if not messages:
            return
        with self._lock:
            for message in messages:
                self.port.send(message)
            self.messages_sent += len(messages)

    def _run_clock(self) -> None:
        """Start, 24 clocks per beat at the current tempo, stop; ticks are scheduled on an absolute
        time line so sleep overshoot does not accumulate into drift. When a new listener
        connects it missed Start: at the next bar every listener gets Song Position + Continue."""
        mido = _mido()
        running, next_tick, ticks = False, 0.0, 0
        listeners, next_poll, tell_position = self._listeners() or 0, 0.0, False
        while not self._stop.is_set():
            playing, tempo = self._music()
            playing = playing and tempo > 0
            if playing != running:
                running, next_tick, ticks = playing, time.monotonic(), 0
                self._send([mido.Message("start" if running else "stop")])
            if time.monotonic() >= next_poll:
                now_listening = self._listeners() or 0
                tell_position |= now_listening > listeners
                listeners, next_poll = now_listening, time.monotonic() + LISTENER_POLL_SECONDS
            if not running:
                self._stop.wait(0.05)
                continue
            if tell_position and ticks % CLOCKS_PER_BAR == 0:
                # Song Position counts sixteenths (6 clocks) in 14 bits; whole bars wrap onto bars
                self._send([mido.Message("songpos", pos=ticks // 6 % 16384), mido.Message("continue")])
                tell_position = False
            next_tick += 60.0 / (tempo * CLOCKS_PER_BEAT)
            delay = next_tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -0.5:          # far behind (a stalled machine): resume from now, not in a burst
                next_tick = time.monotonic()
            self._send([mido.Message("clock")])
            ticks += 1
        if running:
            self._send([mido.Message("stop")])

    def close(self) -> None:
        """Stop the clock, end a sounding note, close the port."""
        self._stop.set()
        if self._clock is not None:
            self._clock.join(timeout=1.0)
            self._close_listeners()
        self._send(self.mapper.release())
        self.port.close()


def open_midi(settings: MidiSettings, music: Callable[[], tuple[bool, float]]) -> tuple[MidiOut | None, str]:
    """(MidiOut, "") when MIDI is on and works; (None, one-line reason) when it is on and cannot be."""
    if not settings.enabled:
        return None, ""
    try:
        return MidiOut(settings, music), ""
    except MidiError as err:
        return None, f"no MIDI out: {err}"

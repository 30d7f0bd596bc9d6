"""The live app's controls, one copy for the window and the headless run.

`LiveController` owns the live settings (what the performer changed since start), the
presets, OSC out (targets, the music state) and the control port (OSC in), and opens the
session with every output attached (`attach_outputs`: Ableton Link, MIDI; OSC out here):
the one composition root of a live run. The headless run calls it directly; the window
calls it from its widgets and learns of remote changes through `ui.window.ControlBridge`.
Threads: see the map in `live/session.py` (GUI, session worker, OSC control).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import settings as settings_mod
from ..engine.source import GenerationParams
from ..outputs.ableton_link import LinkSync, open_link
from ..outputs.midi import MidiOut, open_midi
from ..outputs.osc.control import ControlError, ControlServer
from ..outputs.osc.feed import OscFeed
from ..outputs.osc.schema import MusicState
from ..outputs.osc.sender import OscSender
from ..outputs.osc.targets import OscTarget, OscTargetError, parse_target, parse_targets
from ..presets import apply_preset, list_presets, save_preset
from ..settings import Settings
from .session import LiveSession, SessionStatus
from .source import build_source, speed_notice


def check_osc(settings: Settings) -> None:
    """Raise OscTargetError naming the bad [osc] target or ableton address (commands check before starting)."""
    parse_targets(settings.osc.targets, settings.osc.mode)
    if settings.osc.ableton:
        parse_target(settings.osc.ableton)


def attach_outputs(session: LiveSession, settings: Settings) -> tuple[LinkSync | None, MidiOut | None]:
    """Ableton Link (the session keeps its beat) and MIDI out (fed every tracked frame), closed with the
    session. Both are extras: one line in `session.notice` each when they cannot be had, and the show
    goes on without them."""
    link, link_notice = open_link(settings.link)
    if link is not None:
        session.sync_with(link)
    midi, midi_notice = open_midi(settings.midi, lambda: (session.playing, session.source.state().tempo))
    if midi is not None:
        session.add_frame_listener(midi.on_frame)
        session.close_with(midi)
    session.notice = "; ".join(line for line in (session.notice, link_notice, midi_notice) if line)
    return link, midi


def music_state(status: SessionStatus) -> MusicState:
    """The /music/* values of a session status: playing once the first chunk is heard, not at start."""
    return MusicState(playing=status.playing and status.chunk_index >= 0, tempo=status.tempo,
                      chunk=status.chunk_index, steering=status.steering_words)


class LiveController:
    """`outputs.osc.control.Controls` for the live app, and the holder of everything the performer may change live.

    Changes to prompt, guidance, temperature, top-k and top-p reach the attached session at its
    next chunk; the rest apply at the next start. `on_start`/`on_stop` say what start and stop
    from the control port mean to the owner; `on_change(settings, preset)` hears of changes made
    by the control port or a preset (on the caller's thread; preset = its name, else "").
    `on_accepted(control, value)` hears of every control that took effect, counted in `controls_accepted`.
    """

    def __init__(self, settings: Settings, presets: Path, notice: Callable[[str], None]):
        self._lock = threading.Lock()    # settings are changed from the GUI and the control port
        self._settings = settings
        self._session: LiveSession | None = None
        self.presets = presets
        self.on_start: Callable[[], None] = lambda: None
        self.on_stop: Callable[[], None] = lambda: None
        self.on_change: Callable[[Settings, str], None] = lambda settings, preset: None
        self.on_accepted: Callable[[str, str], None] = lambda control, value: None   # a control that took effect
        self.controls_accepted = 0
        self.build_source = build_source     # the source for each start (MusicGen or the synth)
        self.ableton_link: LinkSync | None = None   # the outputs the last session was opened with
        self.midi: MidiOut | None = None
        osc = settings.osc
        ableton = None
        try:
            ableton = parse_target(osc.ableton) if osc.ableton else None
        except OscTargetError as err:        # Ableton is left out, nothing else changes
            notice(f"[osc] ableton: {err}")
        self.sender = OscSender(ableton=ableton)
        self.feed = OscFeed(self.sender, settings.camera)
        self.control: ControlServer | None = None

    # -- settings (any thread) ------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    def set(self, key: str, value) -> Settings:
        """Validate and keep one setting (SettingsError changes nothing); a live one reaches the session."""
        return self._change(lambda settings: settings_mod.override(settings, {key: value}))

    def _change(self, change: Callable[[Settings], Settings]) -> Settings:
        with self._lock:     # held across set_params (a swap) so two changes reach the session in their order
            before = self._settings
            self._settings = after = change(before)
            params = GenerationParams.from_settings(after.generation)
            if self._session is not None and params != GenerationParams.from_settings(before.generation):
                self._session.set_params(params)
        return after

    def _remote(self, control: str, key: str, value) -> None:
        self.on_change(self.set(key, value), "")
        self._accepted(control, repr(value))

    def _accepted(self, control: str, value: str = "") -> None:
        with self._lock:
            self.controls_accepted += 1
        self.on_accepted(control, value)

    def set_targets(self, lines: Sequence[str]) -> tuple[OscTarget, ...]:
        """Send OSC to these targets from now on; OscTargetError (nothing changes) names a bad line."""
        targets = parse_targets(lines, self._settings.osc.mode)
        self.sender.set_targets(targets)
        self.set("osc.targets", tuple(lines))
        return targets

    def preset_names(self) -> list[str]:
        return list_presets(self.presets)

    def save_preset(self, name: str) -> Path:
        return save_preset(self._settings, self.presets, name)

    # -- osc.control.Controls (the control server's thread, or the window's) -------------------
    def start(self) -> None:
        self.on_start()
        self._accepted("start")

    def stop(self) -> None:
        self.on_stop()
        self._accepted("stop")

    def set_prompt(self, prompt: str) -> None:
        self._remote("prompt", "generation.prompt", prompt)

    def set_guidance(self, cfg: float) -> None:
        self._remote("guidance", "generation.cfg", cfg)

    def set_temperature(self, temperature: float) -> None:
        self._remote("temperature", "generation.temperature", temperature)

    def calibrate(self) -> None:
        session = self._session
        if session is not None and session.calibrate():
            self._accepted("calibrate")

    def load_preset(self, name: str) -> None:
        """Apply a preset's keys (PresetError names what is wrong and changes nothing)."""
        self.on_change(self._change(lambda settings: apply_preset(settings, self.presets, name)), name)
        self._accepted("preset", repr(name))

    def open_control_port(self) -> str:
        """Listen on [osc] control_port; one line saying where, or why not (the show goes on without)."""
        osc = self._settings.osc
        if osc.control_port == 0:
            return "off ([osc] control_port = 0)"
        try:
            self.control = ControlServer(self, osc.control_port, osc.control_host, osc.control_secret).start()
        except ControlError as err:
            return str(err)
        return f"listening on {osc.control_host}:{self.control.port}"

    # -- the session ------------------------------------------------------------------------
    def open_session(self, settings: Settings, frames=None, *, output: str = "auto",
                     duration: float | None = None, record_advice: str = "pass --out WAV to record") -> LiveSession:
        """Build the source (may load MusicGen: seconds), open the frames and the session, attach OSC out.

        `settings` is this run's (the live ones, perhaps with a run-only change such as audio.out);
        `frames` and `record_advice` as `LiveSession` takes them, None = the camera or video of [camera] source.
        Not started; call `close_session` when it has stopped.
        """
        source = self.build_source(settings)
        camera = frames is None
        fallback = ""
        if camera:
            from ..capture.sources import demo_fallback_notice, open_source
            from ..capture.thread import CaptureThread

            opened = open_source(settings.camera.source, settings.camera)
            fallback = demo_fallback_notice(settings.camera.source, opened)
            frames = CaptureThread(opened)
        try:
            session = LiveSession(settings, source, frames, output=output, duration=duration,
                                  record_advice=record_advice)
        except BaseException:
            if camera:
                frames.stop()     # never started: this only closes the camera or file
            raise
        self.ableton_link, self.midi = attach_outputs(session, settings)
        session.notice = "; ".join(line for line in (fallback, speed_notice(source), session.notice) if line)
        session.add_frame_listener(self.feed.on_frame)
        session.add_chunk_listener(self.feed.on_chunk)
        with self._lock:
            self._session = session
            session.set_params(GenerationParams.from_settings(self._settings.generation))   # changed while it loaded
        return session

    def on_status(self, status: SessionStatus) -> None:
        """The running session's status (a few times a second): the music state for OSC."""
        self.feed.on_status(music_state(status))

    def close_session(self) -> None:
        """The session stopped: no more live changes reach it; OSC says the music stopped."""
        with self._lock:
            self._session = None
        self.feed.on_stopped()

    def close(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None
        self.sender.close()

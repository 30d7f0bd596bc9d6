"""OSC out: one bundle per processed frame to every target, in each target's schema.

Threads: `send_frame` runs on the tracking thread (it is a frame listener) and only
builds a datagram and calls `sendto`, which does not block on UDP. `set_targets` and
`set_music` may be called from any thread: each swaps in an immutable value, so the
tracking thread always sees a whole old or a whole new state, never a mix.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import socket

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import UDPClient

from ...features.schema import FeatureFrame
from .schema import (ABLETON_START, ABLETON_STOP, ABLETON_TEMPO, Message, MusicState,
                     faceosc_messages, native_messages, wekinator_messages)
from .targets import OscTarget, OscTargetError

log = logging.getLogger(__name__)

ABLETON_INTERVAL = 1.0     # seconds between AbletonOSC updates: tempo/transport, not modulation
ABLETON_TEMPO_STEP = 0.5   # BPM change worth telling Live about (estimates jitter by less)


def build_message(address: str, args: Sequence = ()) -> OscMessage:
    message = OscMessageBuilder(address)
    for arg in args:
        message.add_arg(arg)
    return message.build()


def build_bundle(messages: Sequence[Message]) -> OscBundle:
    """Encode messages as one OSC bundle (timetag 'immediately')."""
    bundle = OscBundleBuilder(IMMEDIATELY)
    for address, args in messages:
        bundle.add_content(build_message(address, args))
    return bundle.build()


def _client(target: OscTarget) -> UDPClient:
    try:
        return UDPClient(target.host, target.port)
    except (socket.gaierror, UnicodeError) as err:
        raise OscTargetError(f"OSC target {target}: cannot resolve host {target.host!r} ({err})") from None


class OscSender:
    """Sends tracking and music state; targets and music state are editable live."""

    def __init__(self, targets: Sequence[OscTarget] = (), ableton: OscTarget | None = None):
        self._clients: tuple[tuple[OscTarget, UDPClient], ...] = ()
        self._music = MusicState()
        self._ableton = (ableton, _client(ableton)) if ableton else None
        self._ableton_sent: tuple[float, bool, float] | None = None   # (time, playing, tempo) last told Live
        self.bundles_sent = 0      # frames sent (one bundle per frame, counted once however many targets)
        self.send_errors = 0       # sendto failures (e.g. network down); never raised to the tracker
        self.set_targets(targets)

    @property
    def targets(self) -> tuple[OscTarget, ...]:
        return tuple(target for target, _ in self._clients)

    def set_targets(self, targets: Sequence[OscTarget]) -> None:
        """Replace every destination (resolving hosts now, so a typo fails here, not per frame)."""
        self._clients = tuple((t, _client(t)) for t in targets)

    @property
    def music(self) -> MusicState:
        return self._music

    def set_music(self, state: MusicState) -> None:
        self._music = state

    def send_frame(self, frame: FeatureFrame, image_size: tuple[int, int]) -> None:
        """One bundle per target for this frame; `image_size` is (width, height) for FaceOSC pixels."""
        clients, music = self._clients, self._music
        encoded: dict[str, OscBundle] = {}
        for target, client in clients:
            if target.mode not in encoded:
                encoded[target.mode] = build_bundle(self._messages(target.mode, frame, music, image_size))
            self._send(target, client, encoded[target.mode])
        self.bundles_sent += 1
        if self._ableton is not None:
            self._tick_ableton(frame.t, music)

    @staticmethod
    def _messages(mode: str, frame: FeatureFrame, music: MusicState, image_size) -> list[Message]:
        if mode == "faceosc":
            return faceosc_messages(frame, image_size)
        if mode == "wekinator":
            return wekinator_messages(frame)
        return native_messages(frame, music)

    def _tick_ableton(self, now: float, music: MusicState) -> None:
        """Tell Live the tempo and transport when they change, at most once per ABLETON_INTERVAL."""
        last = self._ableton_sent
        if last is not None:
            last_t, last_playing, last_tempo = last
            if now - last_t < ABLETON_INTERVAL:
                return
            if music.playing == last_playing and abs(music.tempo - last_tempo) < ABLETON_TEMPO_STEP:
                return
        if music.tempo > 0:
            self._send(*self._ableton, build_message(ABLETON_TEMPO, [float(music.tempo)]))
        if last is None or music.playing != last[1]:
            self._send(*self._ableton, build_message(ABLETON_START if music.playing else ABLETON_STOP))
        self._ableton_sent = (now, music.playing, music.tempo)

    def _send(self, target: OscTarget, client: UDPClient, content: OscBundle | OscMessage) -> None:
        try:
            client.send(content)
        except OSError as err:
            self.send_errors += 1
            if self.send_errors == 1 or self.send_errors % 1000 == 0:
                log.warning("OSC send to %s failed (%d so far): %s", target, self.send_errors, err)

    def close(self) -> None:
        """Close every socket (teardown); the sender is unusable afterwards."""
        for _, client in self._clients:
            client.close()
        if self._ableton is not None:
            self._ableton[1].close()
        self._clients, self._ableton = (), None

"""MIDI out: the CC map, change-only and rate-limited sends, mouth notes, clock, and a real port read back."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import threading
import time

import pytest

from expotion_live.features.schema import EXPRESSION_NAMES, FeatureFrame
from expotion_live.outputs.midi import (CLOCKS_PER_BEAT, HEAD_RANGE, Controller, MidiError, MidiMapper, open_midi,
                                        parse_map)
from expotion_live.settings import MidiSettings

mido = pytest.importorskip("mido", reason="mido is not installed")
MOUTH = EXPRESSION_NAMES.index("mouth_height")


def frame(t: float, mouth: float = 0.0, yaw: float = 0.0, energy: float = 0.0, found: bool = True) -> FeatureFrame:
    f = FeatureFrame(t=t, face_found=found, motion_energy=energy)
    f.expression[MOUTH] = mouth
    f.head[0] = yaw
    return f


def sent(messages) -> list[tuple]:
    return [(m.type, m.control, m.value) if m.type == "control_change" else (m.type, m.note, m.velocity)
            for m in messages]


def test_map_entries_parse_and_bad_ones_are_one_line():
    assert parse_map(["smile:22", "yaw:1/14"]) == (Controller("smile", 22), Controller("yaw", 1, fine=True))
    for bad, says in (("grin:22", "SIGNAL one of"), ("smile", "SIGNAL one of"), ("smile:123", "CC must be 0-119"),
                      ("smile:40/14", "needs CC 0-31"), ("smile:20/7", "optionally /14")):
        with pytest.raises(MidiError, match=says) as err:
            parse_map([bad])
        assert "\n" not in str(err.value)
    with pytest.raises(MidiError, match="CC 33 is already mapped"):
        parse_map(["smile:1/14", "jaw:33"])


def test_controllers_go_out_on_change_at_most_rate_hz():
    mapper = MidiMapper(MidiSettings(map=("mouth_height:20", "yaw:28", "motion_energy:31"), rate_hz=10.0))
    first = sent(mapper.messages(frame(0.0, mouth=0.5, yaw=HEAD_RANGE, energy=0.0)))
    assert first == [("control_change", 20, 64), ("control_change", 28, 127), ("control_change", 31, 0)]
    assert mapper.messages(frame(0.2, mouth=0.5, yaw=HEAD_RANGE)) == []          # nothing changed: nothing sent
    assert sent(mapper.messages(frame(0.25, mouth=0.6))) == [("control_change", 20, 76), ("control_change", 28, 64)]
    assert mapper.messages(frame(0.28, mouth=0.7)) == []                         # within 1/10 s: held back...
    assert sent(mapper.messages(frame(0.36, mouth=0.7))) == [("control_change", 20, 89)]   # ...then its latest value
    assert sent(mapper.messages(frame(0.5, yaw=-2 * HEAD_RANGE, mouth=0.7))) == [("control_change", 28, 0)]  # clipped


def test_fourteen_bit_controllers_send_coarse_then_fine():
    mapper = MidiMapper(MidiSettings(map=("smile:2/14",), channel=3))
    f = FeatureFrame(t=0.0, face_found=True)
    f.expression[EXPRESSION_NAMES.index("smile")] = 0.3
    messages = mapper.messages(f)
    value = round(0.3 * 16383)
    assert sent(messages) == [("control_change", 2, value >> 7), ("control_change", 34, value & 127)]
    assert {m.channel for m in messages} == {2}                                   # channel 3, zero-based on the wire


def test_mouth_opening_plays_a_note_with_hysteresis():
    mapper = MidiMapper(MidiSettings(map=(), note=60))
    notes = []
    for i, mouth in enumerate((0.1, 0.5, 0.35, 0.5, 0.2, 0.8)):
        notes += sent(mapper.messages(frame(i / 30, mouth=mouth)))
    assert notes == [("note_on", 60, 64), ("note_off", 60, 0), ("note_on", 60, 102)]
    assert sent(mapper.messages(frame(1.0, mouth=0.8, found=False))) == [("note_off", 60, 0)]   # face lost
    assert mapper.release() == []


def test_missing_backend_or_bad_port_is_one_line_and_off_is_silent():
    assert open_midi(MidiSettings(), lambda: (False, 0.0)) == (None, "")
    midi, notice = open_midi(MidiSettings(enabled=True, virtual=False, port="no such port here"),
                             lambda: (False, 0.0))
    assert midi is None and notice.startswith("no MIDI out: ") and "\n" not in notice
    assert any(reason in notice for reason in ("no such port here", "ALSA sequencer", "python-rtmidi"))
    midi, notice = open_midi(MidiSettings(enabled=True, map=("grin:1",)), lambda: (False, 0.0))
    assert midi is None and "grin:1" in notice


def test_session_goes_on_without_midi_and_link_it_cannot_have():
    from expotion_live.engine.synth import SynthSource
    from expotion_live.live.controller import attach_outputs
    from expotion_live.live.session import LiveSession
    from expotion_live.settings import LinkSettings, Settings, override

    settings = override(Settings(), {"midi.enabled": True, "midi.virtual": False, "midi.port": "no such port here",
                                     "engine.kind": "synth"})
    settings = dataclasses.replace(settings, link=LinkSettings(mode="lead"))   # a settings file refuses it at load
    frames = [FeatureFrame(t=i / 30.0, face_found=True) for i in range(30)]
    session = LiveSession(settings, SynthSource(), frames, output="file", duration=1.0)
    assert attach_outputs(session, settings) == (None, None) and session.link is None
    lines = session.notice.split("; ")
    assert any(line.startswith("no MIDI out: ") for line in lines) and any("no Ableton Link" in line for line in lines)
    session.start()
    assert session.wait(timeout=30)
    status = session.status()
    session.stop()
    assert status.played_seconds >= 1.0 and status.link is None


def _jack_midi() -> str:
    """'' when a virtual JACK MIDI port can be made here, else why not."""
    if importlib.util.find_spec("rtmidi") is None:
        return "python-rtmidi is not installed (it has no wheel for this Python yet)"
    return ""


class JackMidiDump:
    """JACK's own MIDI monitor (`jack_midi_dump`) as a second client: what reached the server, decoded."""

    def __init__(self, name: str):
        self.name = name
        self.process = subprocess.Popen(["stdbuf", "-oL", "jack_midi_dump", name], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()
        _wait_for(lambda: f"{name}:input" in _jack_ports(), what=f"jack_midi_dump's port {name}:input")

    def connect(self, port: str) -> None:
        subprocess.run(["jack_connect", port, f"{self.name}:input"], check=True, capture_output=True)

    def messages(self) -> list:
        """Every message so far, as mido decodes the bytes jack_midi_dump printed ("  1234: b0 14 40 ...")."""
        out = []
        for line in list(self.lines):
            _, colon, rest = line.partition(":")
            if colon:
                data = [int(b, 16) for b in rest.split()[:3] if len(b) == 2 and all(c in "0123456789abcdef" for c in b)]
                out.append(mido.Message.from_bytes(data[:_length(data[0])]))
        return out

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=5)


def _length(status: int) -> int:
    """Bytes of a MIDI message by its status byte (the rest of jack_midi_dump's line is words)."""
    if status >= 0xF0:
        return {0xF2: 3, 0xF3: 2}.get(status, 1)
    return 2 if status & 0xF0 in (0xC0, 0xD0) else 3


def _jack_ports() -> str:
    return subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout


def _wait_for(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.05)


@pytest.fixture
def midi_dump(jack_server):
    reason = _jack_midi()
    if reason:
        pytest.skip(reason)
    dump = JackMidiDump(f"dump-{os.getpid()}-{time.monotonic_ns()}")
    yield dump
    dump.close()


def test_jack_port_sends_controllers_notes_and_tells_a_late_listener_where_the_bar_is(midi_dump):
    from expotion_live.outputs.midi import CLOCKS_PER_BAR, MidiOut

    name = f"Expotion Live test {os.getpid()}"
    tempo = 300.0                 # a bar of 4 beats in 0.8 s
    out = MidiOut(MidiSettings(enabled=True, api="jack", port=name, map=("mouth_height:20", "yaw:1/14"), note=62,
                               clock=True), lambda: (True, tempo))
    assert f"{name}:{name}" in _jack_ports() and "UNIX_JACK" in out.description
    time.sleep(0.3)               # Start and a few clocks go out to nobody
    midi_dump.connect(f"{name}:{name}")
    start = time.monotonic()
    for i in range(10):
        out.on_frame(frame(start + i / 30, mouth=0.1 + 0.08 * i, yaw=0.1 * i))
        time.sleep(1 / 30)
    _wait_for(lambda: any(m.type == "continue" for m in midi_dump.messages()), what="Continue", timeout=3.0)
    time.sleep(0.2)
    out.close()
    _wait_for(lambda: any(m.type == "stop" for m in midi_dump.messages()), what="Stop")
    received = midi_dump.messages()
    ccs = [m for m in received if m.type == "control_change"]
    mouth = [m.value for m in ccs if m.control == 20]
    sent_mouth = [round(127 * (0.1 + 0.08 * i)) for i in range(10)]
    # in order and exact; the dummy server on a loaded machine may lose an event in an xrun, not more
    assert mouth == [v for v in sent_mouth if v in mouth] and len(mouth) >= 8, mouth
    assert {m.control for m in ccs} == {20, 1, 33}
    assert [m.type for m in received if m.type in ("note_on", "note_off")] == ["note_on", "note_off"]
    kinds = [m.type for m in received if m.type not in ("control_change", "note_on", "note_off")]
    assert "start" not in kinds and kinds[-1] == "stop"       # it connected after Start...
    position = next(m for m in received if m.type == "songpos")
    assert kinds.index("songpos") + 1 == kinds.index("continue")   # ...so it is told the bar, then continues
    assert position.pos > 0 and position.pos % (CLOCKS_PER_BAR // 6) == 0
    assert out.messages_sent > len(received)                   # Start and the first clocks reached no one


def test_session_with_clock_on_starts_and_clocks_the_connected_daw(midi_dump):
    """A real session with [midi] clock on: Start at the session's start, then clocks at its tempo."""
    from expotion_live.engine.synth import SynthSource
    from expotion_live.live.controller import attach_outputs
    from expotion_live.live.session import LiveSession
    from expotion_live.settings import Settings, override

    name = f"Expotion Live session {os.getpid()}"
    settings = override(Settings(), {"midi.enabled": True, "midi.api": "jack", "midi.port": name,
                                     "midi.clock": True, "engine.kind": "synth"})
    frames = [FeatureFrame(t=i / 30.0, face_found=True) for i in range(30)]
    session = LiveSession(settings, SynthSource(), frames, output="file", duration=1.5)
    link, midi = attach_outputs(session, settings)
    assert midi is not None, session.notice
    midi_dump.connect(f"{name}:{name}")
    time.sleep(0.3)
    assert midi_dump.messages() == []                          # nothing plays before Start
    session.start()
    assert session.wait(timeout=30)
    tempo = session.status().tempo
    session.stop()
    _wait_for(lambda: any(m.type == "stop" for m in midi_dump.messages()), what="Stop")
    kinds = [m.type for m in midi_dump.messages() if m.type in ("start", "stop", "clock", "songpos", "continue")]
    assert kinds[0] == "start" and kinds[-1] == "stop" and kinds.count("start") == 1, kinds[:3]
    beats = kinds.count("clock") / CLOCKS_PER_BEAT
    # ~1.5 s at the synth's tempo: the count shows the tempo, loosely (not a timing test)
    assert 0.5 * 1.5 * tempo / 60 < beats < 1.5 * 1.5 * tempo / 60 + 1


def test_alsa_listing_counts_the_subscribers_of_our_port():
    """The kernel's /proc/asound/seq/clients format (sound/core/seq/seq_clientmgr.c)."""
    from expotion_live.outputs.midi_listeners import alsa_connections

    listing = """Client info
  cur  clients : 4
  peak clients : 4
  max  clients : 192

Client   0 : "System" [Kernel]
  Port   0 : "Timer" (Rwe-)
  Port   1 : "Announce" (R-e-)
    Connecting To: 128:0
Client  14 : "Midi Through" [Kernel]
  Port   0 : "Midi Through Port-0" (RWe-)
Client 128 : "Expotion Live" [User Legacy]
  Port   0 : "Expotion Live" (R-e-)
    Connecting To: 129:0, 130:0[real:0]
  Output pool :
    Pool size          : 500
Client 129 : "Ableton Live" [User Legacy]
  Port   0 : "Expotion Live" (-We-)
    Connected From: 128:0
"""
    assert alsa_connections(listing, "Expotion Live", "Expotion Live") == 2
    assert alsa_connections(listing, "Ableton Live", "Expotion Live") == 0
    assert alsa_connections(listing, "Nobody", "Expotion Live") == 0


def test_midi_api_is_checked_at_load():
    from expotion_live.settings import SettingsError, from_dict

    assert from_dict({"midi": {"api": "jack"}}).midi.api == "jack"
    with pytest.raises(SettingsError, match='midi.api = .pipewire.: choose one of auto, alsa, jack'):
        from_dict({"midi": {"api": "pipewire"}})


def test_no_jack_server_says_how_in_one_line(tmp_path):
    if _jack_midi():
        pytest.skip(_jack_midi())
    env = dict(os.environ, JACK_DEFAULT_SERVER=f"none-{os.getpid()}", JACK_NO_START_SERVER="1")
    code = ("from expotion_live.outputs.midi import open_midi; from expotion_live.settings import MidiSettings; "
            "print(open_midi(MidiSettings(enabled=True, api='jack'), lambda: (False, 0.0))[1])")
    line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip()
    assert line.startswith("no MIDI out: ") and "start a JACK server" in line and "\n" not in line


def test_doctor_lists_midi_ports_and_link_as_information():
    from expotion_live.doctor import check_link, check_midi
    from expotion_live.settings import Settings, override

    checks = check_midi(Settings()) + check_link(Settings())
    assert [c.name for c in checks] == ["MIDI out", "Ableton Link"]
    assert not any(c.needed_for_show for c in checks) and all("\n" not in c.detail for c in checks)
    midi, link = checks
    assert "api = auto" in midi.detail
    assert ("output ports:" in midi.detail) if midi.ok else any(
        reason in midi.detail for reason in ("ALSA sequencer", "python-rtmidi"))
    assert link.ok and "aalink" in link.detail
    wrong = check_midi(override(Settings(), {"midi.enabled": True, "midi.virtual": False, "midi.port": "nope 42"}))[0]
    assert not wrong.ok and any(reason in wrong.detail for reason in ("nope 42", "ALSA sequencer", "python-rtmidi"))


def test_docs_list_the_default_map_and_every_signal():
    import re
    from pathlib import Path

    from expotion_live.outputs.midi import SIGNALS
    from expotion_live.settings import MIDI_MAP

    text = (Path(__file__).resolve().parents[1] / "docs" / "midi.md").read_text()
    documented = {f"{signal}:{cc}" for cc, signal in re.findall(r"\| (\d+) \| `(\w+)` ", text)}
    assert documented == set(MIDI_MAP)
    signals_table = text.split("| signal | 0 | 1 |")[1].split("\n\n")[0]
    assert set(re.findall(r"`(\w+)`", signals_table)) == set(SIGNALS)


def test_headless_run_says_midi_opened_and_counts_what_reached_the_daw(midi_dump, face_video, tmp_path, capsys):
    import argparse

    from expotion_live.commands import run as run_mod
    from expotion_live.settings import Settings, override

    name = f"Expotion Live run {os.getpid()}"
    parser = argparse.ArgumentParser(prog="expotion-live")
    run_mod.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "--headless", "--video", str(face_video), "--engine", "synth", "--file-only",
                              "--out", str(tmp_path / "show.wav"), "--duration", "2"])
    settings = override(Settings(), {"midi.enabled": True, "midi.api": "jack", "midi.port": name,
                                     "osc.control_port": 0})
    connect = threading.Thread(target=lambda: (_wait_for(lambda: f"{name}:{name}" in _jack_ports(), "the port", 60),
                                               midi_dump.connect(f"{name}:{name}")), daemon=True)
    connect.start()
    assert args.handler(args, settings) == 0
    connect.join(timeout=5)
    err = capsys.readouterr().err.splitlines()
    assert f"expotion-live run: MIDI out on virtual port {name!r} (UNIX_JACK)" in err
    sent = int(err[-1].split("MIDI ")[1].split(" messages")[0])
    received = len(midi_dump.messages())
    assert 0 < received <= sent            # the face's controllers reached jack_midi_dump (some before it connected)

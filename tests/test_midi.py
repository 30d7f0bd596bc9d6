"""MIDI out: the CC map, change-only and rate-limited sends, mouth notes, clock, and a real port read back."""
from __future__ import annotations

import importlib.util
import os
import time

import pytest

from expotion_live.features.schema import EXPRESSION_NAMES, FeatureFrame
from expotion_live.osc.midi import (CLOCKS_PER_BEAT, HEAD_RANGE, Controller, MidiError, MidiMapper, list_ports,
                                    open_midi, parse_map)
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
    from expotion_live.live.session import LiveSession
    from expotion_live.settings import Settings, override

    settings = override(Settings(), {"midi.enabled": True, "midi.virtual": False, "midi.port": "no such port here",
                                     "link.mode": "lead", "engine.kind": "synth"})
    frames = [FeatureFrame(t=i / 30.0, face_found=True) for i in range(30)]
    session = LiveSession(settings, SynthSource(), frames, output="file", duration=1.0)
    assert session.midi is None and session.link is None
    lines = session.notice.split("; ")
    assert any(line.startswith("no MIDI out: ") for line in lines) and any("no Ableton Link" in line for line in lines)
    session.start()
    assert session.wait(timeout=30)
    status = session.status()
    session.stop()
    assert status.played_seconds >= 1.0 and status.link is None


def _alsa_sequencer() -> str:
    """'' when a virtual ALSA MIDI port can be made here, else why not."""
    if importlib.util.find_spec("rtmidi") is None:
        return "python-rtmidi is not installed (it has no wheel for this Python yet)"
    if not os.path.exists("/dev/snd/seq"):
        return ("no ALSA sequencer (/dev/snd/seq): this kernel has no snd-seq "
                "(load it with `modprobe snd-seq-dummy` where the kernel ships it)")
    try:
        list_ports()
    except MidiError as err:
        return str(err)
    return ""


def test_virtual_port_read_back_by_a_second_client():
    reason = _alsa_sequencer()
    if reason:
        pytest.skip(reason)
    from expotion_live.osc.midi import MidiOut

    name = f"Expotion Live test {os.getpid()}"
    tempo = 150.0
    out = MidiOut(MidiSettings(enabled=True, port=name, map=("mouth_height:20", "yaw:1/14"), note=62, clock=True),
                  lambda: (True, tempo))
    inputs = [n for n in mido.get_input_names() if name in n]
    assert inputs, mido.get_input_names()
    with mido.open_input(inputs[0]) as port:
        start = time.monotonic()
        for i in range(10):
            out.on_frame(frame(start + i / 30, mouth=0.1 + 0.08 * i, yaw=0.1 * i))
            time.sleep(1 / 30)
        time.sleep(0.5)
        received = list(port.iter_pending())
        out.close()
        time.sleep(0.1)
        received += list(port.iter_pending())
    ccs = [m for m in received if m.type == "control_change"]
    assert [m.value for m in ccs if m.control == 20][-1] == round(127 * (0.1 + 0.08 * 9))
    assert {m.control for m in ccs} == {20, 1, 33}
    assert [m.type for m in received if m.type in ("note_on", "note_off")] == ["note_on", "note_off"]
    clocks = [m for m in received if m.type == "clock"]
    beats = len(clocks) / CLOCKS_PER_BEAT
    assert "start" in [m.type for m in received] and received[-1].type == "stop"
    # ~0.8 s of clock at 150 BPM is ~2 beats: the count shows the tempo, loosely (not a timing test)
    assert 1.0 < beats < 3.0


def test_doctor_lists_midi_ports_and_link_as_information():
    from expotion_live.doctor import check_link, check_midi
    from expotion_live.settings import Settings, override

    checks = check_midi(Settings()) + check_link(Settings())
    assert [c.name for c in checks] == ["MIDI out", "Ableton Link"]
    assert not any(c.needed_for_show for c in checks) and all("\n" not in c.detail for c in checks)
    midi, link = checks
    assert midi.ok == (_alsa_sequencer() == "")
    assert ("output ports:" in midi.detail) if midi.ok else any(
        reason in midi.detail for reason in ("ALSA sequencer", "python-rtmidi"))
    assert link.ok and "aalink" in link.detail
    wrong = check_midi(override(Settings(), {"midi.enabled": True, "midi.virtual": False, "midi.port": "nope 42"}))[0]
    assert not wrong.ok and any(reason in wrong.detail for reason in ("nope 42", "ALSA sequencer", "python-rtmidi"))


def test_docs_list_the_default_map_and_every_signal():
    import re
    from pathlib import Path

    from expotion_live.osc.midi import SIGNALS
    from expotion_live.settings import MIDI_MAP

    text = (Path(__file__).resolve().parents[1] / "docs" / "midi.md").read_text()
    documented = {f"{signal}:{cc}" for cc, signal in re.findall(r"\| (\d+) \| `(\w+)` ", text)}
    assert documented == set(MIDI_MAP)
    signals_table = text.split("| signal | 0 | 1 |")[1].split("\n\n")[0]
    assert set(re.findall(r"`(\w+)`", signals_table)) == set(SIGNALS)

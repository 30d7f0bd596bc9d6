"""OSC out and control in, round trip over real UDP on loopback with python-osc servers."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from expotion_live.features.schema import EXPRESSION_NAMES, HEAD_NAMES, UPPER_BODY, FeatureFrame
from expotion_live.outputs.osc.control import COMMANDS, ControlError, ControlServer
from expotion_live.outputs.osc.schema import (FACEOSC_GESTURES, WEKINATOR_INPUTS, MusicState, faceosc_messages,
                                              native_messages)
from expotion_live.outputs.osc.sender import OscSender
from expotion_live.outputs.osc.targets import OscTarget, OscTargetError, parse_target, parse_targets

DOCS = Path(__file__).resolve().parents[1] / "docs" / "osc.md"


class Receiver:
    """A real python-osc UDP server on an ephemeral loopback port that keeps every packet."""

    def __init__(self):
        self.packets: list[list[tuple[str, list]]] = []   # one entry per datagram: its messages
        self._arrived = threading.Condition()
        receiver = self

        class Recording(Dispatcher):
            def call_handlers_for_packet(self, data, client_address):
                messages = [(m.message.address, list(m.message.params))
                            for m in osc_packet.OscPacket(data).messages]
                with receiver._arrived:
                    receiver.packets.append(messages)
                    receiver._arrived.notify_all()
                return []

        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), Recording())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[list[tuple[str, list]]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.packets) >= n, timeout)
            return list(self.packets)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(2)


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for r in made:
        r.close()


def tracked_frame(t: float = 0.0, found: bool = True) -> FeatureFrame:
    """A frame with distinct known values everywhere, as the tracker would fill it."""
    rng = np.random.default_rng(int(t * 1000))
    landmarks = np.zeros((478, 3), np.float32)
    landmarks[:, 0] = rng.uniform(0.4, 0.6, 478)
    landmarks[:, 1] = rng.uniform(0.3, 0.7, 478)
    landmarks[234, :2], landmarks[454, :2] = (0.4, 0.5), (0.6, 0.5)    # face 0.2 of the width
    pose = np.column_stack([np.linspace(0.1, 0.9, len(UPPER_BODY)), np.linspace(0.2, 0.8, len(UPPER_BODY)),
                            np.zeros(len(UPPER_BODY)), np.full(len(UPPER_BODY), 0.9)]).astype(np.float32)
    return FeatureFrame(
        t=t, face_found=found, face_confidence=0.75 if found else 0.0,
        landmarks=landmarks if found else None,
        expression=np.linspace(0.1, 0.8, len(EXPRESSION_NAMES)).astype(np.float32),
        head=np.array([0.1, -0.2, 0.05], np.float32), pose_found=True, pose_confidence=0.5, pose=pose,
        motion_energy=0.33,
    )


def as_dict(messages):
    return {address: args for address, args in messages}


def test_native_bundle_per_frame_carries_every_documented_address(receivers):
    rx = receivers()
    sender = OscSender([OscTarget("127.0.0.1", rx.port)])
    music = MusicState(playing=True, tempo=121.5, chunk=7, steering=("bright", "fast"))
    sender.set_music(music)
    for i in range(30):
        sender.send_frame(tracked_frame(i / 30), (640, 480))
    packets = rx.wait_for(30)
    assert len(packets) == 30 and sender.bundles_sent == 30 and sender.send_errors == 0
    got = as_dict(packets[-1])
    assert [a for a, _ in packets[-1]] == [a for a, _ in native_messages(tracked_frame(), music)]
    assert got["/face/found"] == [1.0] and got["/pose/found"] == [1.0]
    for name, value in zip(EXPRESSION_NAMES, np.linspace(0.1, 0.8, len(EXPRESSION_NAMES))):
        assert got[f"/face/{name}"] == [pytest.approx(value, abs=1e-6)]
        assert 0.0 <= got[f"/face/{name}"][0] <= 1.0
    assert [got[f"/head/{n}"][0] for n in HEAD_NAMES] == pytest.approx([0.1, -0.2, 0.05], abs=1e-6)
    assert got["/motion/energy"] == [pytest.approx(0.33)]
    assert got["/pose/wrist_left"] == pytest.approx([0.6, 0.575, 0.9], abs=1e-6)
    assert got["/music/playing"] == [1.0] and got["/music/tempo"] == [pytest.approx(121.5)]
    assert got["/music/chunk"] == [7] and got["/music/steering"] == ["bright", "fast"]
    # every value is a plain float except the chunk index and the steering words
    for address, args in packets[-1]:
        if address not in ("/music/chunk", "/music/steering"):
            assert all(isinstance(a, float) for a in args), address


def test_lost_face_still_sends_found_flags(receivers):
    rx = receivers()
    sender = OscSender([OscTarget("127.0.0.1", rx.port)])
    sender.send_frame(tracked_frame(found=False), (640, 480))
    got = as_dict(rx.wait_for(1)[0])
    assert got["/face/found"] == [0.0] and got["/pose/found"] == [1.0]


def test_faceosc_mode_exact_schema_and_types(receivers):
    rx = receivers()
    sender = OscSender([parse_target(f"faceosc@127.0.0.1:{rx.port}")])
    sender.send_frame(tracked_frame(), (640, 480))
    sender.send_frame(tracked_frame(found=False), (640, 480))
    found, lost = rx.wait_for(2)
    assert [a for a, _ in found] == ["/found", "/pose/scale", "/pose/position", "/pose/orientation",
                                     *(g[0] for g in FACEOSC_GESTURES), "/gesture/nostrils"]
    got = as_dict(found)
    assert got["/found"] == [1] and isinstance(got["/found"][0], int)
    assert got["/pose/scale"] == [pytest.approx(0.2 * 640 / 40)]
    x, y = got["/pose/position"]
    assert 0.4 * 640 < x < 0.6 * 640 and 0.3 * 480 < y < 0.7 * 480
    assert got["/pose/orientation"] == pytest.approx([-0.2, 0.1, 0.05], abs=1e-6)   # pitch, yaw, roll
    mouth_width = np.linspace(0.1, 0.8, len(EXPRESSION_NAMES))[0]
    assert got["/gesture/mouth/width"] == [pytest.approx(10 + mouth_width * 8, abs=1e-5)]
    assert all(isinstance(v, float) for a, args in found[1:] for v in args)
    assert lost == [("/found", [0])]


def test_wekinator_mode_one_message_all_floats(receivers):
    rx = receivers()
    sender = OscSender([parse_target(f"wekinator@127.0.0.1:{rx.port}")])
    for i in range(5):
        sender.send_frame(tracked_frame(i * 0.02), (640, 480))
    packets = rx.wait_for(5)
    assert len(packets) == 5
    (address, values), = packets[0]
    assert address == "/wek/inputs" and len(values) == len(WEKINATOR_INPUTS) == 14
    assert all(isinstance(v, float) for v in values)
    assert values[0] == 1.0 and values[-2] == pytest.approx(0.33) and values[-1] == 1.0


def test_several_targets_each_in_its_mode_and_editable_live(receivers):
    native, faceosc, later = receivers(), receivers(), receivers()
    sender = OscSender(parse_targets([f"127.0.0.1:{native.port}", f"faceosc@127.0.0.1:{faceosc.port}"]))
    for i in range(3):
        sender.send_frame(tracked_frame(i), (640, 480))
    sender.set_targets(parse_targets([f"wekinator@localhost:{later.port}"]))
    for i in range(4):
        sender.send_frame(tracked_frame(i), (640, 480))
    assert len(later.wait_for(4)) == 4 and later.packets[0][0][0] == "/wek/inputs"
    assert len(native.wait_for(3)) == 3 and native.packets[0][0][0] == "/face/found"
    assert len(faceosc.wait_for(3)) == 3 and faceosc.packets[0][0][0] == "/found"
    time.sleep(0.1)           # nothing more arrives at the removed targets
    assert len(native.packets) == 3 and len(faceosc.packets) == 3


def test_ableton_tempo_and_transport_at_a_low_rate(receivers):
    rx = receivers()
    sender = OscSender([], ableton=parse_target(f"127.0.0.1:{rx.port}"))
    frames = 250                                    # 5 s at 50 frames/s, tempo drifting every frame
    for i in range(frames):
        sender.set_music(MusicState(playing=i >= 100, tempo=100 + i * 0.1, chunk=i // 50))
        sender.send_frame(tracked_frame(i / 50), (640, 480))
    time.sleep(0.2)
    messages = [m for p in rx.packets for m in p]
    tempos = [args[0] for address, args in messages if address == "/live/song/set/tempo"]
    transport = [address for address, _ in messages if address.endswith("_playing")]
    assert 4 <= len(tempos) <= 6                    # at most once a second, never once a frame
    assert tempos == sorted(tempos)
    assert transport == ["/live/song/stop_playing", "/live/song/start_playing"]


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9000", OscTarget("127.0.0.1", 9000, "native")),
    ("localhost:57120", OscTarget("127.0.0.1", 57120, "native")),
    ("faceosc@127.0.0.1", OscTarget("127.0.0.1", 8338, "faceosc")),
    ("wekinator@10.0.0.2", OscTarget("10.0.0.2", 6448, "wekinator")),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text, words", [
    ("127.0.0.1:port", "not a number"), (":9000", "no host"), ("midi@127.0.0.1:9000", "unknown"),
    ("127.0.0.1:70000", "outside"),
])
def test_bad_targets_say_what_is_wrong(text, words):
    with pytest.raises(OscTargetError, match=words):
        parse_target(text)


def test_unresolvable_host_fails_when_set_not_per_frame():
    with pytest.raises(OscTargetError, match="cannot resolve"):
        OscSender([OscTarget("no-such-host.invalid", 9000)])


class RecordedControls:
    """Controls that remember what they were asked to do."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.event = threading.Event()

    def start(self): self.calls.append(("start",))
    def stop(self): self.calls.append(("stop",)); self.event.set()
    def set_prompt(self, prompt): self.calls.append(("prompt", prompt))
    def set_guidance(self, cfg): self.calls.append(("guidance", cfg))
    def set_temperature(self, t): self.calls.append(("temperature", t))
    def calibrate(self): self.calls.append(("calibrate",))

    def load_preset(self, name):
        if name != "calm":
            raise KeyError(f"no preset {name!r}")
        self.calls.append(("preset", name))


def test_control_port_drives_the_app_and_survives_junk():
    controls = RecordedControls()
    server = ControlServer(controls, port=0).start()
    client = SimpleUDPClient("127.0.0.1", server.port)
    try:
        client.send_message("/expotion/start", [])
        client.send_message("/expotion/prompt", "dark ambient drone")
        client.send_message("/expotion/guidance", 4)            # an int where a float is expected is fine
        client.send_message("/expotion/temperature", 0.5)
        client.send_message("/expotion/calibrate", [])
        client.send_message("/expotion/preset", "calm")
        # junk: wrong types, wrong arity, out of range, unknown address, non-OSC bytes, a failing preset
        client.send_message("/expotion/guidance", "loud")
        client.send_message("/expotion/prompt", [])
        client.send_message("/expotion/temperature", 99.0)
        client.send_message("/expotion/guidance", float("nan"))
        client.send_message("/expotion/volume", 0.5)
        client._sock.sendto(b"\x00\x01garbage", ("127.0.0.1", server.port))
        client._sock.sendto(b"/expotion/start\x00,", ("127.0.0.1", server.port))
        client.send_message("/expotion/preset", "missing")
        client.send_message("/expotion/stop", [])
        assert controls.event.wait(5)
        counts = server.snapshot()
    finally:
        server.stop()
    assert controls.calls == [("start",), ("prompt", "dark ambient drone"), ("guidance", 4.0),
                              ("temperature", 0.5), ("calibrate",), ("preset", "calm"), ("stop",)]
    assert counts == {"handled": 7, "malformed": 6, "unknown": 1, "failed": 1}


def test_control_port_in_use_is_a_clear_error():
    first = ControlServer(RecordedControls(), port=0)
    try:
        with pytest.raises(ControlError, match="control_port"):
            ControlServer(RecordedControls(), port=first.port)
    finally:
        first.stop()


def test_docs_list_every_address():
    text = DOCS.read_text(encoding="utf-8")
    music = MusicState(playing=True, tempo=120, chunk=1, steering=("a",))
    addresses = {a for a, _ in native_messages(tracked_frame(), music)}
    addresses |= {a for a, _ in faceosc_messages(tracked_frame(), (640, 480))}
    addresses |= set(COMMANDS) | {"/wek/inputs", "/live/song/set/tempo", "/live/song/start_playing"}
    documented = set(re.findall(r"`(/[a-z_/]+)", text))
    assert addresses <= documented, sorted(addresses - documented)


def test_the_feed_carries_session_status_and_chunk_boundaries(receivers):
    from expotion_live.outputs.osc.feed import OscFeed
    from expotion_live.outputs.osc.schema import MusicState
    from expotion_live.settings import CameraSettings

    native, faceosc = receivers(), receivers()
    sender = OscSender(parse_targets([f"127.0.0.1:{native.port}", f"faceosc@127.0.0.1:{faceosc.port}"]))
    feed = OscFeed(sender, CameraSettings(width=1280, height=720))
    feed.on_status(MusicState(playing=True, tempo=96.0, chunk=3, steering=("slow",)))
    feed.on_frame(tracked_frame(), None)                 # features from a tracking recording: no image
    feed.on_chunk(4, 200)
    feed.on_frame(tracked_frame(), None)
    feed.on_stopped()
    feed.on_frame(tracked_frame(), None)
    states = [(d["/music/playing"], d["/music/tempo"], d["/music/chunk"], d["/music/steering"])
              for d in map(as_dict, native.wait_for(3))]
    assert states == [([1.0], [96.0], [3], ["slow"]), ([1.0], [96.0], [4], ["slow"]), ([0.0], [96.0], [4], ["slow"])]
    x, y = as_dict(faceosc.wait_for(1)[0])["/pose/position"]
    assert 0.4 * 1280 < x < 0.6 * 1280 and 0.3 * 720 < y < 0.7 * 720   # pixels of the configured camera size

"""Ableton Link with real peers (aalink), every packet kept inside a network namespace with only loopback.

Link finds peers by UDP multicast. Each test runs its peers in a namespace it makes itself
(`unshare -n`: a fresh namespace holds nothing but `lo`), with multicast routed on `lo`;
the script checks that `lo` is its only interface before any peer is enabled. Where such a
namespace cannot be made, the test is skipped with the reason: it never sends to a real network.
"""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
from expotion_live.outputs.ableton_link import TempoLead, follow_window, open_link
from expotion_live.engine.steering import PromptSteerer, conducted_beat
from expotion_live.settings import LinkSettings
from conftest import in_loopback_namespace

pytest.importorskip("aalink", reason="aalink (the Ableton Link binding) is not installed")

ISOLATED = textwrap.dedent("""
    import socket, sys
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        sys.exit(f"refusing to run Link peers: interfaces {names}, not loopback only")
""")
# A second peer in its own process: joins at the tempo it is given, then reports what it sees.
PEER = ISOLATED + textwrap.dedent("""
    import json, time
    from expotion_live.outputs.ableton_link import AbletonLink
    peer = AbletonLink(float(sys.argv[1]), 4.0)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        if line.strip() == "tempo":
            peer.tempo = float(sys.stdin.readline())
        print(json.dumps({"peers": peer.peers, "tempo": peer.tempo, "beat": peer.beat, "phase": peer.phase,
                          "time": peer._link.time.total_seconds()}), flush=True)
    peer.close()
""")
# The test's own side: starts PEER, then runs the body given in argv[1].
MAIN = ISOLATED + textwrap.dedent("""
    import json, subprocess, time
    from expotion_live.outputs.ableton_link import AbletonLink, LinkSync
    from expotion_live.settings import LinkSettings

    class Peer:
        def __init__(self, bpm):
            self.process = subprocess.Popen([sys.executable, "-c", sys.argv[2], str(bpm)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)
        def ask(self, *lines):
            for line in lines:
                self.process.stdin.write(f"{line}\\n")
            self.process.stdin.flush()
            return json.loads(self.process.stdout.readline())
        def close(self):
            self.process.stdin.write("quit\\n")
            self.process.stdin.flush()
            self.process.wait(timeout=10)

    def wait_for(condition, seconds=10.0):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.05)
        return False

    result = {}
    exec(sys.argv[1])
    print(json.dumps(result))
""")


def run_in_netns(body: str, timeout: float = 90.0) -> dict:
    result = in_loopback_namespace([sys.executable, "-c", MAIN, textwrap.dedent(body), PEER], timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_peers_agree_on_tempo_and_phase():
    result = run_in_netns("""
        ours = AbletonLink(120.0, 4.0)
        peer = Peer(90.0)
        result["found"] = wait_for(lambda: ours.peers == 1 and peer.ask("status")["peers"] == 1)
        ours.tempo = 133.0
        result["theirs_after_ours"] = wait_for(lambda: abs(peer.ask("status")["tempo"] - 133.0) < 0.01)
        seen = peer.ask("tempo", "97.5")
        result["ours_after_theirs"] = wait_for(lambda: abs(ours.tempo - 97.5) < 0.01)
        theirs = peer.ask("status")
        now = ours._link.time.total_seconds()
        # their phase carried to our clock reading (the same host clock) must be ours
        result["phase_gap"] = (theirs["phase"] + (now - theirs["time"]) * 97.5 / 60.0 - ours.phase + 2.0) % 4.0 - 2.0
        peer.close()
        ours.close()
    """)
    assert result["found"], "the two peers never saw each other"
    assert result["theirs_after_ours"] and result["ours_after_theirs"]
    assert abs(result["phase_gap"]) < 0.02          # beats: well under a 16th note


def test_conduct_mode_leads_the_session_only_with_a_held_tempo():
    result = run_in_netns("""
        sync = LinkSync(LinkSettings(mode="conduct", conduct_change_bpm=2.0, conduct_hold_seconds=1.0), bpm=110.0)
        peer = Peer(110.0)
        wait_for(lambda: sync.status().peers == 1)
        sync.lead(126.0, now=0.0)
        sync.lead(0.0, now=0.5)          # a pause: not confident, nothing held
        sync.lead(126.0, now=1.2)
        result["after_pause"] = peer.ask("status")["tempo"]
        sync.lead(126.4, now=2.3)        # held for over a second
        wait_for(lambda: abs(peer.ask("status")["tempo"] - 126.4) < 0.01, 5.0)
        result["after_hold"] = peer.ask("status")["tempo"]
        result["status"] = sync.status().__dict__
        peer.close()
        sync.close()
    """)
    assert result["after_pause"] == pytest.approx(110.0)
    assert result["after_hold"] == pytest.approx(126.4, abs=0.01)
    assert result["status"]["mode"] == "conduct" and result["status"]["peers"] == 1


def test_conduct_mode_plays_on_the_session_beat_while_the_performer_leads_its_tempo():
    """Conduct: the window is conducted by the session (its tempo and beat) once the performer's
    tempo has locked, and the performer's tempo, read before that, still moves the session."""
    result = run_in_netns("""
        import numpy as np
        from expotion_live.features.schema import CONDUCT_DIM, FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
        sync = LinkSync(LinkSettings(mode="conduct", conduct_change_bpm=2.0, conduct_hold_seconds=0.5), bpm=110.0)
        peer = Peer(110.0)
        wait_for(lambda: sync.status().peers == 1)

        def hands(bpm, beats=3.0):       # the hands conducting at `bpm`, their last frame now
            conduct = np.zeros((5, CONDUCT_DIM), np.float32)
            conduct[-1, :3] = (1.0, bpm, beats)
            return TimelineWindow(time.monotonic(), np.zeros((5, FACE_DIM), np.float32),
                                  np.zeros((5, MOTION_DIM), np.float32), np.zeros((5, *FLOW_SHAPE), np.float32),
                                  conduct)

        still = hands(0.0)
        still.conduct[:] = 0.0
        result["before_lock"] = sync.window(still).conduct[-1, :3].tolist()   # no tempo yet: its own time
        for _ in range(8):               # 126 BPM held for 0.8 s: the band is moved
            sync.window(hands(126.0))
            time.sleep(0.1)
        wait_for(lambda: abs(peer.ask("status")["tempo"] - 126.0) < 0.01, 5.0)
        result["band_after_126"] = peer.ask("status")["tempo"]
        link_now = sync.peer._link.time.total_seconds()
        conducted = sync.window(hands(126.0)).conduct[-1, :3].tolist()
        theirs = peer.ask("status")
        result.update(conducted=conducted, theirs_now=theirs["beat"] + (link_now - theirs["time"]) * 126.0 / 60.0)
        for _ in range(8):               # the performer's new tempo still leads: not the session's own heard back
            sync.window(hands(134.0))
            time.sleep(0.1)
        wait_for(lambda: abs(peer.ask("status")["tempo"] - 134.0) < 0.01, 5.0)
        result["band_after_134"] = peer.ask("status")["tempo"]
        peer.close()
        sync.close()
    """)
    assert result["before_lock"] == [0.0, 0.0, 0.0]
    assert result["band_after_126"] == pytest.approx(126.0, abs=0.01)
    assert result["band_after_134"] == pytest.approx(134.0, abs=0.01)
    conducting, bpm, beats = result["conducted"]
    assert conducting == 1.0 and bpm == pytest.approx(126.0, abs=0.01)
    # the band's beat, not the hands' own count (3.0): the music is on the session's phase
    assert abs((beats - result["theirs_now"] + 2.0) % 4.0 - 2.0) < 0.02


def test_follow_window_carries_the_session_beat_at_the_window_end():
    result = run_in_netns("""
        import numpy as np
        from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
        sync = LinkSync(LinkSettings(mode="follow"))
        peer = Peer(100.0)
        wait_for(lambda: sync.status().peers == 1)
        peer.ask("tempo", "96")
        wait_for(lambda: abs(sync.status().tempo - 96.0) < 0.01)
        link_now, now = sync.peer._link.time.total_seconds(), time.monotonic()
        window = TimelineWindow(now - 0.25, np.zeros((5, FACE_DIM), np.float32),     # its last frame 0.25 s ago
                                np.zeros((5, MOTION_DIM), np.float32), np.zeros((5, *FLOW_SHAPE), np.float32))
        when = link_now - 0.25
        conducted = sync.window(window).conduct[-1].tolist()
        theirs = peer.ask("status")
        result.update(conducted=conducted, theirs_at_then=theirs["beat"] + (when - theirs["time"]) * 96.0 / 60.0)
        peer.close()
        sync.close()
    """)
    conducting, bpm, beats = result["conducted"]
    assert conducting == 1.0 and bpm == pytest.approx(96.0)
    # the band's beat when the window's last frame was seen (Link agrees on it modulo the quantum)
    assert abs((beats - result["theirs_at_then"] + 2.0) % 4.0 - 2.0) < 0.02


def test_follow_mode_plays_the_synth_at_the_session_tempo():
    result = run_in_netns("""
        from expotion_live.engine.synth import SynthSource
        from expotion_live.features.schema import FeatureFrame
        import contextlib, io
        from expotion_live.commands.run import RunNotices
        from expotion_live.live.controller import attach_outputs
        from expotion_live.live.session import LiveSession
        from expotion_live.settings import Settings, override
        peer = Peer(90.0)
        settings = override(Settings(), {"link.mode": "follow", "engine.kind": "synth"})
        frames = [FeatureFrame(t=i / 30.0, face_found=True, motion_energy=0.3) for i in range(90)]
        session = LiveSession(settings, SynthSource(), frames, output="file", duration=3.0)
        attach_outputs(session, settings)
        wait_for(lambda: session.link.status().peers == 1)
        peer.ask("tempo", "104")         # the band sets the tempo; whose tempo a fresh session kept was a race
        wait_for(lambda: abs(session.link.status().tempo - 104.0) < 0.01)
        session.start()
        session.wait(timeout=30)
        status = session.status()
        session.stop()
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            RunNotices().update(status)          # a headless run says who is in the session
        result.update(tempo=status.tempo, link=status.link.__dict__, notice=session.notice, said=said.getvalue())
        peer.close()
    """)
    assert result["notice"] == ""
    assert result["link"]["peers"] == 1 and result["link"]["tempo"] == pytest.approx(104.0)
    assert result["tempo"] == 104                   # the synth plays at the session's tempo
    assert result["said"] == "expotion-live run: Ableton Link (follow): 1 peer, 104.0 BPM\n"


def test_tempo_lead_holds_back_pauses_and_wandering():
    lead = TempoLead(change_bpm=2.0, hold_seconds=2.0)
    assert lead.update(121.0, 120.0, 0.0) is None          # within the change: nothing
    assert lead.update(130.0, 120.0, 0.0) is None          # a candidate
    assert lead.update(130.5, 120.0, 1.9) is None          # not held long enough yet
    assert lead.update(130.5, 120.0, 2.1) == 130.5
    assert lead.update(140.0, 130.5, 3.0) is None
    assert lead.update(0.0, 130.5, 4.0) is None            # a pause drops the candidate
    assert lead.update(140.0, 130.5, 5.5) is None          # so it starts over
    assert lead.update(150.0, 130.5, 8.0) is None          # wandered: starts over again
    assert lead.update(150.0, 130.5, 10.0) == 150.0


def test_follow_window_conducts_like_the_hands():
    n = 20
    window = TimelineWindow(1.0, np.zeros((n, FACE_DIM), np.float32), np.zeros((n, MOTION_DIM), np.float32),
                            np.zeros((n, *FLOW_SHAPE), np.float32))
    assert conducted_beat(window) is None
    assert conducted_beat(follow_window(window, 104.0, 17.25)) == (104.0, 17.25)
    _, words = PromptSteerer().steer("warm pads", window)   # MusicGen's prompt takes the session tempo
    assert "at 104 bpm" in words


def test_link_off_or_misnamed_mode():
    assert open_link(LinkSettings()) == (None, "")
    link, notice = open_link(LinkSettings(mode="lead"))
    assert link is None and notice.startswith("no Ableton Link: link.mode must be one of") and "\n" not in notice

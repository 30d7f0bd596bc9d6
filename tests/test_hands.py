"""Hands and conducting on real tracking: MediaPipe finds the demo's rendered hands in a video.

`testing.hand_video` draws two hands (the performer's right beating 8 beats at 90 BPM, then 8
at 120, the left held open; then both drop out of the picture) and knows the true ictus
times. The video goes through the real `Tracker` (face, pose, hands, flow, conductor),
and from there into a recording, the overlay, OSC on loopback and the gesture synth.
"""
import threading

import cv2
import numpy as np
import pytest
from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from expotion_live.testing import hand_video as hand_demo
from expotion_live.capture.sources import VideoFileSource
from expotion_live.engine.source import ChunkRequest, GenerationParams
from expotion_live.engine.steering import PromptSteerer
from expotion_live.engine.synth import SynthSource, synthetic_performance
from expotion_live.features.conductor import Conductor
from expotion_live.features.recording import load_recording, save_recording
from expotion_live.features.schema import FRAME_RATE, HAND_SIDES, TimelineWindow
from expotion_live.features.timeline import FeatureTimeline
from expotion_live.features.tracker import Tracker
from expotion_live.outputs.osc.schema import MusicState
from expotion_live.outputs.osc.sender import OscSender
from expotion_live.outputs.osc.targets import OscTarget
from expotion_live.settings import TrackingSettings
from expotion_live.ui.overlay import HAND_COLOURS, draw_overlay

TEMPI = (90.0, 120.0)
BEATS_EACH = 8
START = 1000.0                      # a live-looking capture clock
RIGHT, LEFT = HAND_SIDES.index("right"), HAND_SIDES.index("left")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return hand_demo.make_hand_video(tmp_path_factory.mktemp("hands") / "conducting.mp4", TEMPI, BEATS_EACH)


@pytest.fixture(scope="module")
def tracked(video):
    """Every frame of the video through the real Tracker: (frames, images, true beat times on the capture clock)."""
    path, beats = video
    source = VideoFileSource(path, realtime=False, loop=False, start_time=START)
    frames, images = [], []
    with Tracker(TrackingSettings()) as tracker:
        while (captured := source.read()) is not None:
            frames.append(tracker.process(captured.image_bgr, captured.t))
            images.append(captured.image_bgr)
    source.close()
    return frames, images, beats + START


def test_mediapipe_finds_both_hands_on_the_performers_sides(tracked):
    frames, _, beats = tracked
    conducting = [f for f in frames if beats[0] - 0.5 < f.t < beats[-1]]
    found = np.array([f.hands_found for f in conducting])
    assert found.mean(axis=0).min() > 0.9, found.mean(axis=0)
    # The performer's right hand is on the left of the (unmirrored) picture, and it is the one that beats.
    right = np.array([f.palms[RIGHT] for f in conducting if f.hands_found[RIGHT]])
    left = np.array([f.palms[LEFT] for f in conducting if f.hands_found[LEFT]])
    assert abs(np.median(right[:, 0]) - hand_demo.BEATING_X) < 0.03
    assert abs(np.median(left[:, 0]) - hand_demo.HOLDING_X) < 0.03
    assert np.ptp(right[:, 1]) > 0.8 * hand_demo.STROKE and np.ptp(left[:, 1]) < 0.02
    assert all(f.leading_hand == RIGHT for f in conducting if f.beat_confidence > 0)
    # The held hand's smoothed landmarks sit on the drawn joints.
    truth = hand_demo.hand_joints((hand_demo.HOLDING_X, hand_demo.HOLDING_Y), (640, 480), performer_right=False)
    held = np.array([f.hands[LEFT, :, :2] for f in conducting if f.hands_found[LEFT]]) * (640, 480)
    assert np.median(np.linalg.norm(held - truth, axis=2)) < 8.0        # pixels
    signals = np.array([f.hand_signals[LEFT] for f in conducting if f.hands_found[LEFT]])
    height, stroke, openness, pinch = np.median(signals, axis=0)
    assert abs(height - (1 - hand_demo.HOLDING_Y)) < 0.03 and stroke < 0.1 and openness > 0.8 and pinch < 0.2
    beating = np.median([f.hand_signals[RIGHT, 1] for f in conducting if f.hands_found[RIGHT]])
    assert beating > 0.8 * hand_demo.STROKE / 0.4


def test_beats_from_real_tracking_are_within_50_ms_and_tempo_within_2_bpm(tracked):
    frames, _, beats = tracked
    found = np.array([f.t - f.beat_lag for f in frames if f.beat_confidence > 0])
    errors = np.array([np.min(np.abs(found - b)) for b in beats[:-1]])      # the last ictus has no rebound
    assert errors.max() < 0.05, errors
    assert len(found) == len(beats) - 1
    for bpm, fourth in ((TEMPI[0], beats[3]), (TEMPI[1], beats[BEATS_EACH + 3])):
        after = [f for f in frames if fourth + 0.1 < f.t < fourth + 0.4]
        assert all(f.conducting for f in after)
        assert max(abs(f.conduct_bpm - bpm) for f in after) < 2.0
    cutoffs = [f.t for f in frames if f.cutoff]
    assert len(cutoffs) == 1 and beats[-1] < cutoffs[0] < beats[-1] + 1.0
    assert not frames[-1].conducting


def test_one_handed_conducting_is_followed_as_well(tmp_path):
    """A single hand is tracked by the one-hand landmarker between searches for a second one."""
    path, beats = hand_demo.make_hand_video(tmp_path / "one.mp4", (120.0, 150.0), 6, holding=False)
    source = VideoFileSource(path, realtime=False, loop=False, start_time=0.0)
    with Tracker(TrackingSettings()) as tracker:
        frames = [tracker.process(c.image_bgr, c.t) for c in iter(source.read, None)]
    source.close()
    conducting = [f for f in frames if beats[0] - 0.5 < f.t < beats[-1]]
    assert np.mean([f.hands_found[RIGHT] for f in conducting]) > 0.9
    assert not any(f.hands_found[LEFT] for f in conducting)
    found = np.array([f.t - f.beat_lag for f in frames if f.beat_confidence > 0])
    assert len(found) == len(beats) - 1
    assert max(np.min(np.abs(found - b)) for b in beats[:-1]) < 0.05
    after = [f for f in frames if beats[-3] < f.t < beats[-2]]
    assert max(abs(f.conduct_bpm - 150.0) for f in after) < 2.0


def test_recorded_hands_replay_the_same_conducting(tracked, tmp_path):
    frames, _, _ = tracked
    loaded = load_recording(save_recording(frames, tmp_path / "take.npz"))
    for name in ("hands_found", "hands", "palms", "hand_signals"):
        np.testing.assert_array_equal(np.stack([getattr(f, name) for f in loaded]),
                                      np.stack([getattr(f, name) for f in frames]))
    # The conductor run again on the recorded hands finds the beats tracking found.
    conductor = Conductor()
    again = [conductor.update(f) for f in loaded]
    np.testing.assert_allclose([f.t - f.beat_lag for f in again if f.beat_confidence > 0],
                               [f.t - f.beat_lag - frames[0].t for f in frames if f.beat_confidence > 0], atol=1e-6)


def test_overlay_draws_each_hand_in_its_sides_colour(tracked):
    frames, images, _ = tracked
    i = next(i for i, f in enumerate(frames) if f.hands_found.all())
    drawn = draw_overlay(images[i], frames[i])
    for side, name in enumerate(HAND_SIDES):
        x, y = (frames[i].palms[side] * (640, 480)).astype(int)
        patch = drawn[max(0, y - 60):y + 60, max(0, x - 60):x + 60].reshape(-1, 3)
        assert np.any(np.all(patch == HAND_COLOURS[name], axis=1)), name
    mirrored = draw_overlay(images[i], frames[i], mirror=True)
    np.testing.assert_array_equal(mirrored, cv2.flip(drawn, 1))


def test_hands_can_be_switched_off(video):
    path, _ = video
    source = VideoFileSource(path, realtime=False, loop=False, start_time=0.0)
    with Tracker(TrackingSettings(hands=False)) as tracker:
        frames = [tracker.process(source.read().image_bgr, i / 30) for i in range(45)]
    source.close()
    assert not any(f.hands_found.any() or f.beat_confidence > 0 for f in frames)


def test_osc_sends_hands_and_the_conducted_beat_on_loopback(tracked):
    frames, _, _ = tracked
    packets, arrived = [], threading.Event()

    class Keep(Dispatcher):
        def call_handlers_for_packet(self, data, client_address):
            packets.append({m.message.address: list(m.message.params) for m in osc_packet.OscPacket(data).messages})
            arrived.set()
            return []

    server = BlockingOSCUDPServer(("127.0.0.1", 0), Keep())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sender = OscSender([OscTarget("127.0.0.1", server.server_address[1], "native")])
    try:
        beat = next(f for f in frames if f.beat_confidence > 0 and f.conducting)
        sender.set_music(MusicState(playing=True, tempo=beat.conduct_bpm))
        sender.send_frame(beat, (640, 480))
        assert arrived.wait(5.0)
    finally:
        sender.close()
        server.shutdown()
        server.server_close()
    got = packets[0]
    assert got["/hand/right/found"] == [1.0] and got["/hand/left/found"] == [1.0]
    assert len(got["/hand/right/landmarks"]) == 63
    assert got["/hand/right/height"][0] == pytest.approx(float(beat.hand_signals[RIGHT, 0]), abs=1e-6)
    assert got["/conduct/conducting"] == [1.0]
    assert got["/conduct/tempo"][0] == pytest.approx(beat.conduct_bpm, abs=1e-3)
    number, confidence, lag = got["/conduct/beat"]
    assert number == int(np.floor(beat.conduct_beats + 1e-6)) and confidence > 0 and 0 <= lag < 0.1
    assert "/conduct/cutoff" not in got


def window_at(frames, t_end: float, seconds: float = 6.0) -> TimelineWindow:
    timeline = FeatureTimeline(30.0)
    for frame in frames:
        if frame.t <= t_end:
            timeline.push(frame)
    return timeline.window(round(seconds * FRAME_RATE))


def test_conducting_sets_the_synths_tempo_and_beat(tracked):
    frames, _, beats = tracked
    params = GenerationParams(prompt="", cfg=1.0, temperature=1.0, top_k=0, top_p=0.0)
    for bpm, t_end in ((TEMPI[0], beats[5]), (TEMPI[1], beats[-2])):
        window = window_at(frames, t_end)
        synth = SynthSource()
        synth.render(ChunkRequest(0, 0, 25, 0, window, params))
        assert synth.controls.bpm == pytest.approx(bpm, abs=1)
        # After the chunk the musical clock is on the conducted beat: its phase is the conductor's, advanced
        # by the chunk at the conducted tempo.
        expected = window.conduct[-1, 2] + 0.5 * synth.controls.bpm / 60.0
        assert (synth._beat - expected + 0.5) % 1.0 - 0.5 == pytest.approx(0.0, abs=1e-6)
        steerer = PromptSteerer()
        steerer.steer("", window)
        assert steerer.tempo.bpm == pytest.approx(bpm, abs=1)
    assert window_at(frames, frames[-1].t).conduct[-1, 0] == 0.0          # after the cut-off: not conducting


def test_the_synth_is_on_the_conducted_beat_when_its_chunk_is_heard(tracked):
    """A chunk heard a quarter beat after the window ends starts a quarter beat further on."""
    frames, _, beats = tracked
    params = GenerationParams(prompt="", cfg=1.0, temperature=1.0, top_k=0, top_p=0.0)
    window = window_at(frames, beats[5])
    clocks = []
    for delay_beats in (0.0, 0.25):
        synth = SynthSource()
        synth.render(ChunkRequest(0, 0, 25, 0, window, params))       # tempo locked first
        synth._beat = 0.0
        plays_at = window.t_end + delay_beats * 60.0 / float(window.conduct[-1, 1])   # at the conducted tempo
        synth.render(ChunkRequest(1, 25, 25, 0, window, params, plays_at=plays_at))
        clocks.append(synth._beat)
    assert (clocks[1] - clocks[0] - 0.25 + 0.5) % 1.0 - 0.5 == pytest.approx(0.0, abs=1e-6)


def test_the_synths_bar_starts_on_the_conductors_downbeat():
    """Beats counted from a downbeat (the hands' first, a Link session's bar of 4): the synth's bar follows."""
    window = synthetic_performance(8.0, bpm=120.0, level=0.6)
    conduct = np.zeros_like(window.conduct)
    conduct[:, 0], conduct[:, 1] = 1.0, 120.0
    conduct[:, 2] = 6.0 + 2.0 * (np.arange(window.n_frames) - window.n_frames + 1) / FRAME_RATE   # beat 6 at the end
    window = TimelineWindow(window.t_end, window.face, window.motion, window.flow, conduct)
    synth = SynthSource()
    synth._follow_conducted_beat(window, None)
    assert synth._beat % 4.0 == pytest.approx(6.0 % 4.0)                # the third beat of a bar, as conducted


def test_the_conducted_tempo_overrides_motion_periodicity():
    """The same performer swaying at 120 BPM: the synth plays 120 until the hands conduct 84."""
    params = GenerationParams(prompt="", cfg=1.0, temperature=1.0, top_k=0, top_p=0.0)
    swaying = synthetic_performance(8.0, bpm=120.0, level=0.6)
    conducted = np.zeros_like(swaying.conduct)
    conducted[:, 0], conducted[:, 1] = 1.0, 84.0
    conducted[:, 2] = 84.0 / 60.0 * np.arange(swaying.n_frames) / FRAME_RATE
    for conduct, bpm in ((None, 120), (conducted, 84)):
        window = TimelineWindow(swaying.t_end, swaying.face, swaying.motion, swaying.flow, conduct)
        synth = SynthSource()
        synth.render(ChunkRequest(0, 0, 25, 0, window, params))
        assert synth.controls.bpm == pytest.approx(bpm, abs=2)

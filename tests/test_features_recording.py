"""Tracking recordings: real tracked frames saved, loaded and played back instead of a camera."""
import numpy as np
import pytest

from expotion_live.testing import face_video as demo
from expotion_live.capture.sources import VideoFileSource
from expotion_live.features.recording import (
    RecordingError, RecordingPlayer, TrackingRecorder, load_recording, save_recording,
)
from expotion_live.features.schema import FeatureFrame
from expotion_live.features.timeline import FeatureTimeline
from expotion_live.features.tracker import Tracker
from expotion_live.settings import TrackingSettings

FPS = 15.0


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A second of real tracking, with a faceless frame in the middle."""
    clip = demo.make_face_video(tmp_path_factory.mktemp("rec") / "clip.mp4", seconds=1.0, fps=FPS)
    source = VideoFileSource(clip, realtime=False, start_time=1000.0)
    recorder = TrackingRecorder()
    with Tracker(TrackingSettings()) as tracker:
        while (captured := source.read()) is not None:
            image = captured.image_bgr if captured.index != 7 else np.zeros_like(captured.image_bgr)
            recorder(tracker.process(image, captured.t), image)
    source.close()
    return recorder


def test_a_recording_round_trips_every_field(tracked, tmp_path):
    path = tracked.save(tmp_path / "take.npz")
    frames = tracked.frames
    loaded = load_recording(path)
    assert len(loaded) == len(frames) == 15
    for original, back in zip(frames, loaded):
        assert back.t == pytest.approx(original.t - 1000.0)
        assert back.face_found == original.face_found and back.pose_found == original.pose_found
        for name in ("geometry", "expression", "head", "pose", "flow"):
            np.testing.assert_array_equal(getattr(back, name), getattr(original, name))
        assert back.motion_energy == pytest.approx(original.motion_energy)
        np.testing.assert_array_equal(back.face_vector(), original.face_vector())
    assert not loaded[7].face_found and loaded[7].landmarks is None
    assert loaded[0].landmarks.shape == (478, 3)


def test_playback_feeds_the_timeline_and_listeners_like_live_tracking(tracked, tmp_path):
    path = tracked.save(tmp_path / "take.npz")
    timeline, seen = FeatureTimeline(5.0), []
    player = RecordingPlayer(path, timeline, on_frame=[lambda frame, image: seen.append((frame, image))],
                             realtime=True)
    player.start()
    player.join(timeout=5)
    assert player.stats().status == "ended" and player.stats().processed == 15
    assert all(image is None for _, image in seen)
    times = np.array([frame.t for frame, _ in seen])
    np.testing.assert_allclose(np.diff(times), 1 / FPS, atol=1e-6)        # recorded spacing kept
    window = timeline.window(10)
    np.testing.assert_allclose(window.face[-1], seen[-1][0].face_vector(), atol=1e-6)


def test_looping_playback_keeps_time_increasing(tracked):
    timeline = FeatureTimeline(5.0)
    player = RecordingPlayer(tracked.frames, timeline, realtime=False, loop=True)
    seen = []
    player.add_listener(lambda frame, image: seen.append(frame.t))
    player.start()
    while len(seen) < 40:
        player.join(timeout=0.01)
    player.stop()
    assert all(b > a for a, b in zip(seen, seen[1:]))
    assert seen[15] - seen[0] == pytest.approx(1.0)                       # one loop = 15 frames at 15 fps


def test_bad_recordings_are_clear_errors(tmp_path):
    with pytest.raises(RecordingError, match="does not exist"):
        load_recording(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(RecordingError, match="not a tracking recording"):
        load_recording(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(RecordingError, match="format"):
        load_recording(other)
    with pytest.raises(RecordingError, match="no frames"):
        save_recording([], tmp_path / "empty.npz")
    with pytest.raises(RecordingError, match=".npz"):
        save_recording([FeatureFrame(t=0.0)], tmp_path / "take.json")

"""Offline extraction: same features as the live path, bad files are clear errors, no face is not an error."""
import math

import cv2
import numpy as np
import pytest

from expotion_live.testing import face_video as demo
from expotion_live.capture.sources import CaptureError, open_source
from expotion_live.capture.thread import CaptureThread
from expotion_live.features.offline import extract_video
from expotion_live.features.pipeline import TrackingThread
from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, FRAME_RATE, MOTION_DIM
from expotion_live.features.timeline import FeatureTimeline
from expotion_live.features.tracker import Tracker
from expotion_live.settings import CameraSettings, TrackingSettings

SECONDS, FPS = 3.0, 15.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return demo.make_face_video(tmp_path_factory.mktemp("offline") / "face.mp4", seconds=SECONDS, fps=FPS)


def test_extract_video_covers_the_clip_on_the_50hz_grid(clip):
    calls = []
    window = extract_video(clip, TrackingSettings(), progress=lambda done, total: calls.append((done, total)))
    n_video = round(SECONDS * FPS)
    last_t = (n_video - 1) / FPS
    assert window.n_frames == math.floor(last_t * FRAME_RATE) + 1
    assert window.t_end == pytest.approx((window.n_frames - 1) / FRAME_RATE)
    assert window.face.shape == (window.n_frames, FACE_DIM)
    assert window.motion.shape == (window.n_frames, MOTION_DIM)
    assert window.flow.shape == (window.n_frames, *FLOW_SHAPE)
    assert window.face.dtype == np.float32
    assert window.face[:, -1].mean() > 0.9                      # face_found
    assert calls[-1] == (n_video, n_video) and len(calls) == n_video


def test_live_path_gives_the_offline_features(clip):
    offline = extract_video(clip, TrackingSettings())
    # The live path: capture thread + tracking thread + timeline, file as fast as possible.
    source = open_source(str(clip), CameraSettings(realtime=False, loop=False))
    capture = CaptureThread(source).start()
    timeline = FeatureTimeline(10.0)
    first_t = []

    def broken_listener(frame, image):
        raise RuntimeError("a listener bug must not stop tracking")

    tracking = TrackingThread(capture, Tracker(TrackingSettings()), timeline,
                              on_frame=[broken_listener, lambda frame, image: first_t.append(frame.t)])
    tracking.start()
    tracking.join(timeout=60)
    capture.stop()
    tracking.tracker.close()
    stats = tracking.stats()
    assert stats.status == "ended" and stats.processed == round(SECONDS * FPS) and stats.dropped == 0
    assert stats.listener_errors == stats.processed and len(first_t) == stats.processed
    live = timeline.window(offline.n_frames, t_end=first_t[0] + offline.t_end)
    np.testing.assert_allclose(live.face, offline.face, atol=1e-4)
    np.testing.assert_allclose(live.motion, offline.motion, atol=1e-4)
    np.testing.assert_allclose(live.flow, offline.flow, atol=1e-3)


def test_a_video_without_a_face_gives_found_zero(tmp_path):
    path = tmp_path / "wall.mp4"
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (15, 15), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for k in range(10):
        writer.write(np.roll(texture, 3 * k, axis=1))           # a moving wall: flow, but nobody there
    writer.release()
    window = extract_video(path, TrackingSettings())
    assert window.n_frames == 46
    assert np.all(window.face == 0.0)                           # face_found = 0 and no face features
    assert window.energy.max() > 0.0


def test_a_truncated_video_is_a_clear_error(tmp_path, face_video):
    data = face_video.read_bytes()
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CaptureError, match="truncated|corrupt"):
        extract_video(truncated, TrackingSettings())


def test_a_video_cut_short_of_its_declared_frames_is_a_clear_error(tmp_path):
    # AVI declares its frame count up front, so a cut file still opens: it must not pass as complete.
    path = tmp_path / "take.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for k in range(20):
        writer.write(np.full((120, 160, 3), 10 * k, np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaptureError, match=r"ends after \d+ of its 20 frames: it is truncated or corrupt"):
        extract_video(path, TrackingSettings())


def test_a_corrupt_or_missing_video_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "noise.mp4"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 255, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CaptureError, match="truncated|corrupt"):
        extract_video(corrupt, TrackingSettings())
    with pytest.raises(CaptureError, match="does not exist"):
        extract_video(tmp_path / "nowhere.mp4", TrackingSettings())


def test_the_bundled_demo_video_is_a_tracked_face(face_video):
    capture = cv2.VideoCapture(str(face_video))
    size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps, count = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
    assert size == (640, 480) and fps == 30
    assert 10 <= count / fps <= 20
    assert face_video.stat().st_size < 600_000
    found = []
    with Tracker(TrackingSettings()) as tracker:
        for k in range(0, int(count), 6):                       # every 6th frame keeps this quick
            capture.set(cv2.CAP_PROP_POS_FRAMES, k)
            ok, image = capture.read()
            assert ok
            found.append(tracker.process(image, k / fps).face_found)
    capture.release()
    assert np.mean(found) > 0.9

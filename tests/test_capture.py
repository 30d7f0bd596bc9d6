"""Capture: video files at their own rate or as fast as possible, looping, latest frame wins,
lost cameras re-opened, clear errors for sources that cannot be used.

There is no camera on the test machine: camera opening is tested up to the device check
(errors and the /sys name lookup on a sysfs-shaped directory); the re-open logic runs
against a file source that reports itself lost, standing in for an unplugged camera.
"""
import time

import pytest

from expotion_live.testing import face_video as demo
from expotion_live.capture.sources import (
    DEMO_VIDEO, CaptureError, SourceLost, VideoFileSource, list_cameras, open_source,
)
from expotion_live.capture.thread import CaptureThread
from expotion_live.settings import CameraSettings

FPS = 20.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return demo.make_face_video(tmp_path_factory.mktemp("capture") / "clip.mp4", seconds=1.0, fps=FPS,
                                size=(320, 240))


def test_file_frames_are_stamped_with_their_position_in_the_file(clip):
    source = VideoFileSource(clip, realtime=False, start_time=5.0)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert len(frames) == 20 == source.frame_count
    assert frames[0].image_bgr.shape == (240, 320, 3)
    assert [f.index for f in frames] == list(range(20))
    assert [f.t for f in frames] == pytest.approx([5.0 + k / FPS for k in range(20)])


def test_realtime_playback_never_delivers_a_frame_before_it_is_due(clip):
    source = VideoFileSource(clip, realtime=True)
    for _ in range(6):
        frame = source.read()
        assert time.monotonic() >= frame.t - 1e-3
    source.close()
    assert frame.t - time.monotonic() < 0.1


def test_looping_continues_time_and_indexes_past_the_end(clip):
    source = VideoFileSource(clip, realtime=False, loop=True, start_time=0.0)
    frames = [source.read() for _ in range(45)]
    source.close()
    times = [f.t for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert frames[20].t == pytest.approx(1.0) and frames[40].t == pytest.approx(2.0)
    assert frames[44].index == 44


def test_a_slow_consumer_gets_the_newest_frame_and_old_ones_are_dropped(clip):
    capture = CaptureThread(open_source(str(clip), CameraSettings(realtime=True, loop=False))).start()
    taken, last = [], -1
    while (frame := capture.wait_next(last, timeout=2.0)) is not None:
        taken.append(frame)
        last = frame.index
        time.sleep(0.15)                                  # tracking three frames' time behind
    capture.stop()
    indexes = [f.index for f in taken]
    assert capture.status == "ended" and capture.frames_read == 20
    assert all(b > a for a, b in zip(indexes, indexes[1:]))
    assert capture.dropped > 5 and len(taken) + capture.dropped == 20
    assert indexes[-1] >= 18                              # the newest, not a queue of stale frames


def test_as_fast_as_possible_waits_for_the_consumer_and_loses_nothing(clip):
    capture = CaptureThread(open_source(str(clip), CameraSettings(realtime=False, loop=False))).start()
    indexes, last = [], -1
    while (frame := capture.wait_next(last, timeout=2.0)) is not None:
        indexes.append(frame.index)
        last = frame.index
        time.sleep(0.01)
    capture.stop()
    assert indexes == list(range(20)) and capture.dropped == 0


def test_latest_peeks_without_taking(clip):
    capture = CaptureThread(open_source(str(clip), CameraSettings(realtime=False, loop=False))).start()
    first = capture.wait_next(-1, timeout=2.0)
    assert capture.latest() is first                      # the producer waits for us: the slot holds
    assert capture.wait_next(first.index, timeout=2.0).index == 1
    capture.stop()
    assert capture.status == "stopped" and capture.finished


class UnpluggedOnce(VideoFileSource):
    """A file source that behaves like a camera unplugged for a while after frame 5."""

    def __init__(self, path):
        super().__init__(path, realtime=True)
        self.reads, self.reopen_attempts = 0, 0

    def read(self):
        self.reads += 1
        if self.reads == 6:
            raise SourceLost("camera 9 stopped delivering frames (unplugged?)")
        return super().read()

    def reopen(self):
        self.reopen_attempts += 1
        if self.reopen_attempts < 3:
            raise CaptureError("camera 9 is not connected")


def test_a_lost_camera_is_reported_and_reopened_without_stopping(clip):
    source = UnpluggedOnce(clip)
    capture = CaptureThread(source, reconnect_interval=0.05).start()
    statuses, last = set(), -1
    while not capture.finished:
        statuses.add(capture.status.split(":")[0])
        frame = capture.wait_next(last, timeout=0.02)
        if frame is not None:
            last = frame.index
    capture.stop()
    assert "lost" in statuses
    assert source.reopen_attempts == 3 and capture.reconnects == 1
    assert capture.error is None and capture.frames_read == 20   # every frame after the gap still came


def test_source_errors_are_clear(tmp_path):
    settings = CameraSettings()
    with pytest.raises(CaptureError, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"), settings)
    with pytest.raises(CaptureError, match="/dev/video57"):
        open_source("57", settings)
    with pytest.raises(CaptureError, match="no camera named 'Nonexistent Cam'"):
        open_source("Nonexistent Cam", settings)


def test_auto_falls_back_to_the_demo_video_without_a_camera():
    if list_cameras():
        pytest.skip("a camera is connected: auto picks it")
    source = open_source("auto", CameraSettings())
    assert isinstance(source, VideoFileSource) and source.path == DEMO_VIDEO and source.loop
    source.close()


def test_cameras_are_listed_by_index_and_name_from_sysfs(tmp_path):
    for node, name, index in [("video0", "HD Pro Webcam C920", "0"), ("video1", "HD Pro Webcam C920", "1"),
                              ("video10", "Integrated Camera: Integrated C", "0")]:
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(name + "\n")
        (tmp_path / node / "index").write_text(index + "\n")
    cameras = list_cameras(tmp_path)
    assert [(c.index, c.name, c.path) for c in cameras] == [
        (0, "HD Pro Webcam C920", "/dev/video0"), (10, "Integrated Camera: Integrated C", "/dev/video10")]


def test_the_demo_writer_without_ffmpeg_makes_a_readable_mpeg4(tmp_path):
    face = demo.astronaut_bgr()
    frames = (demo.render_frame(face, demo.motion_at(k / 10, 1.0), (320, 240)) for k in range(10))
    demo._write_mpeg4(tmp_path / "plain.mp4", frames, 10.0, (320, 240))
    source = VideoFileSource(tmp_path / "plain.mp4", realtime=False)
    assert source.frame_count == 10 and source.size == (320, 240) and source.fps == 10.0
    source.close()

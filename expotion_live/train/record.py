"""Record mode, the paper's data collection: the performer moves to a track they chose while
the camera records; the pair is saved as clips in the training layout (`train/dataset.py`).

    DATA/<track>-<date>-<time>-001/take.mp4     camera, constant frame rate, aligned to the music
                                   music.wav    the same span of the original track (its own rate)
                                   caption.txt  when a caption is given

Timing: the track is played through the audio output (a PortAudio device, or a sink
paced by the wall clock when there is no sound card) from a preloaded ring, and the time
its first sample is heard (`t0`, on `time.monotonic()`, the clock frames are stamped
with) maps every camera frame to a position in the track. Each clip's video gets one
frame per tick of the camera's frame rate, taking the captured frame nearest each tick,
so a dropped camera frame repeats its neighbour instead of shifting the rest.

A clip becomes visible only when complete: its files are written inside a hidden
`.NAME.partial` folder that is renamed into place at the end, so an interrupted
recording leaves the finished clips and nothing half written (`find_clips` skips
hidden folders).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..atomic import AtomicFile, atomic_path
from ..settings import Settings
from .dataset import CAPTION_FILE

CLIP_SECONDS = 10.0        # the paper trains on 10 s clips
MIN_CLIP_SECONDS = 2.0     # a shorter tail at the end of a take is dropped (too little to learn from)
START_TIMEOUT = 5.0        # seconds to wait for the audio output to take the first block


class RecordError(RuntimeError):
    """Recording cannot proceed; the message says what to fix."""


@dataclass(frozen=True)
class RecordedClip:
    folder: Path
    start: float           # seconds into the track
    seconds: float
    frames: int            # video frames written


def load_track(path: Path) -> tuple[np.ndarray, int]:
    """(samples (N, C) float32, sample rate) of an audio file, with a clear error if unreadable."""
    import soundfile as sf

    if not path.is_file():
        raise RecordError(f"music file {path} does not exist")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise RecordError(f"cannot read music file {path}: {err} (use WAV, FLAC or OGG)") from None
    if samples.shape[0] == 0:
        raise RecordError(f"music file {path} is empty")
    return samples, rate


def to_playback(samples: np.ndarray, rate: int, playback_rate: int) -> np.ndarray:
    """Mono float32 at the output's rate (the stream runs at EnCodec's 32 kHz)."""
    from scipy.signal import resample_poly

    mono = samples.mean(axis=1)
    if rate != playback_rate:
        g = math.gcd(rate, playback_rate)
        mono = resample_poly(mono, playback_rate // g, rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


class TrackPlayer:
    """Plays one preloaded track through D's audio path with the gesture DSP switched off."""

    def __init__(self, track: np.ndarray, settings: Settings, file_sink: bool):
        from ..audio.dsp import DspPath
        from ..audio.output import AudioDeviceError, BlockPlayer, open_output
        from ..audio.ring_buffer import RingBuffer

        audio = settings.audio
        self.sample_rate, self.block_size = audio.sample_rate, audio.block_size
        self.ring = RingBuffer(len(track) + audio.block_size)
        self.ring.write(track)
        player = BlockPlayer(self.ring, DspPath(audio.sample_rate, audio.block_size, enabled=False))
        try:     # the live session's own output choice: the sound card, or a wall-clock sink
            self.output, _ = open_output(player, audio, "file" if file_sink else "device")
        except AudioDeviceError as err:
            raise RecordError(f"{err}; to record without a sound card add --file-sink") from None
        self.latency = self.output.latency_seconds

    def start(self) -> float:
        """Start playing; return `t0`, the monotonic time the track's first sample is heard."""
        self.output.start()
        deadline = time.monotonic() + START_TIMEOUT
        while self.ring.read_index == 0:
            if time.monotonic() > deadline:
                raise RecordError("the audio output did not start playing; check the device "
                                  "(`expotion-live doctor`) or add --file-sink")
            time.sleep(0.001)
        # the block just read started at read_index - block_size and left at last_read_time
        read_index, when = self.ring.read_index, self.ring.last_read_time
        return when - (read_index - self.block_size) / self.sample_rate + self.latency

    def stop(self) -> None:
        self.output.stop()


class ClipWriter:
    """One clip: frames at a constant rate into take.mp4, then the music span and the caption."""

    def __init__(self, folder: Path, start: float, end: float, fps: float, size: tuple[int, int]):
        self.folder, self.start, self.end, self.fps = folder, start, end, fps
        self.partial = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self._take = AtomicFile(self.partial / "take.mp4")
        self._video = cv2.VideoWriter(str(self._take.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._video.isOpened():
            shutil.rmtree(self.partial, ignore_errors=True)      # nothing of this clip is left behind
            raise RecordError(f"OpenCV cannot write MPEG-4 video into {self.partial}")
        self.frames = 0

    def next_tick(self) -> float:
        """Track time (seconds) of the next video frame this clip needs."""
        return self.start + self.frames / self.fps

    def write(self, image: np.ndarray) -> None:
        self._video.write(image)
        self.frames += 1

    def finish(self, track: np.ndarray, rate: int, caption: str) -> RecordedClip:
        """Close the video, add the music it covers, and move the clip folder into place."""
        import soundfile as sf

        self._video.release()
        self._take.commit()
        seconds = self.frames / self.fps
        first = round(self.start * rate)
        with atomic_path(self.partial / "music.wav") as tmp:
            sf.write(str(tmp), track[first:first + round(seconds * rate)], rate)
        if caption:
            with atomic_path(self.partial / CAPTION_FILE) as tmp:
                tmp.write_text(caption + "\n", encoding="utf-8")
        os.replace(self.partial, self.folder)
        return RecordedClip(self.folder, self.start, seconds, self.frames)

    def abort(self) -> None:
        self._video.release()
        shutil.rmtree(self.partial, ignore_errors=True)        # the temporary take with it


def shortest_clip(clip_seconds: float) -> float:
    """The shortest clip worth keeping (a tail, or a take the camera ended early)."""
    return min(MIN_CLIP_SECONDS, clip_seconds)


def plan_clips(total: float, clip_seconds: float) -> list[tuple[float, float]]:
    """[(start, end)] track spans: whole clips, plus the tail if it is long enough to keep."""
    min_seconds = shortest_clip(clip_seconds)
    spans, start = [], 0.0
    while total - start >= min_seconds - 1e-9:
        end = min(start + clip_seconds, total)
        spans.append((start, end))
        start = end
    return spans


def record_session(music: str | os.PathLike, out_dir: str | os.PathLike, settings: Settings, *,
                   camera: str | None = None, seconds: float | None = None,
                   clip_seconds: float = CLIP_SECONDS, caption: str = "", file_sink: bool = False,
                   progress: Callable[[str], None] | None = None) -> list[RecordedClip]:
    """Play `music`, record the camera, write clips into `out_dir`; return the clips written."""
    from ..capture.sources import CaptureError, open_source

    music, out_dir = Path(music), Path(out_dir)
    if clip_seconds <= 0:
        raise RecordError(f"--clip-seconds must be positive, got {clip_seconds}")
    samples, rate = load_track(music)
    total = samples.shape[0] / rate if seconds is None else min(seconds, samples.shape[0] / rate)
    pending = plan_clips(total, clip_seconds)
    if not pending:
        raise RecordError(f"{total:.1f} s of music is shorter than the shortest clip "
                          f"({shortest_clip(clip_seconds):g} s)")
    try:
        source = open_source(camera or settings.camera.source, settings.camera)
    except CaptureError as err:
        raise RecordError(str(err)) from None
    planned, stamp = len(pending), time.strftime("%Y%m%d-%H%M%S")
    clips: list[RecordedClip] = []

    def next_writer(image: np.ndarray) -> ClipWriter | None:
        if not pending:
            return None
        start, end = pending.pop(0)
        height, width = image.shape[:2]
        folder = out_dir / f"{music.stem}-{stamp}-{len(clips) + 1:03d}"
        return ClipWriter(folder, start, end, source.fps, (width, height))

    writer: ClipWriter | None = None
    try:
        player = TrackPlayer(to_playback(samples[:round(total * rate)], rate, settings.audio.sample_rate),
                             settings, file_sink)
        try:
            t0 = player.start()
            previous = None                       # (track time, image) of the last captured frame
            while True:
                try:
                    captured = source.read()
                except CaptureError as err:
                    raise RecordError(f"camera stopped: {err}") from None
                if captured is None:
                    break                         # a video file ended
                now = captured.t - t0             # where the track is when this frame was taken
                if now < 0:
                    continue                      # before the music started
                writer = writer or next_writer(captured.image_bgr)
                while writer is not None and writer.next_tick() <= now:
                    tick = writer.next_tick()
                    use_previous = previous is not None and tick - previous[0] < now - tick
                    writer.write(previous[1] if use_previous else captured.image_bgr)
                    if writer.next_tick() > writer.end - 0.5 / writer.fps:
                        clips.append(writer.finish(samples, rate, caption))
                        if progress:
                            progress(f"clip {len(clips)}/{planned}: {clips[-1].folder} "
                                     f"({clips[-1].seconds:.1f} s, {clips[-1].frames} frames)")
                        writer = next_writer(captured.image_bgr)
                if writer is None:
                    break                         # every planned clip is written
                previous = (now, captured.image_bgr)
        finally:
            player.stop()
        if writer is not None and writer.frames / writer.fps >= shortest_clip(clip_seconds):
            clips.append(writer.finish(samples, rate, caption))   # the camera ended early: keep the tail
            writer = None
    finally:
        if writer is not None:
            writer.abort()
        source.close()
    return clips

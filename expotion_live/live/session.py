"""The live session: threads and hand-offs only. This docstring is THE thread map of the live app.

Every thread of a live run (window or headless), what it owns, what it may block on, and
what links it to the next. Arrows are hand-offs; "latest wins" means a slot that keeps
only the newest value, so a slow reader skips values rather than queueing them.

Composition (`live/`): `source.build_source` loads the music source, `controller.LiveController`
owns the live settings, presets, OSC out and the control port and opens the session;
`commands/run.py` drives it headless, `ui/window.py` + `ui/workers.py` drive it from the window.

- GUI thread (window only): widgets and timers. Edits go to the `LiveController` (a short
  lock; prompt/guidance/... reach the scheduler latest-wins); start/stop/calibrate go to the
  session worker as queued Qt signals. The preview timer takes the newest (features, image)
  from `ui.workers.LatestFrame` (latest wins); the stage timer copies the newest played audio
  out of `audio.monitor.AudioMonitor` (never waits for its writer). Never waits on the
  model, the audio or the worker (stop is a request; the worker's `stopped` signal answers).
- session worker thread (window: `ui.workers.SessionWorker` on a QThread; headless: the main
  thread in `commands/run.py`): builds the source (loads MusicGen: seconds), opens the camera,
  starts and stops the session (stop waits for the chunk being rendered), and polls
  `LiveSession.status()` four times a second; the `SessionStatus` dataclass goes to the
  controller (OSC /music/*) and, as a queued signal, to the GUI thread.
- OSC control thread (`outputs.osc.control.ControlServer`, `osc-control`): owns the control socket;
  blocks on it; calls the `LiveController`, which changes the live settings under its lock
  and hands generation params to the scheduler (latest wins). Start/stop go to the owner:
  the headless run's stop event, or the window's `ControlBridge`, which emits queued
  signals onto the GUI thread (as do changed settings, so the widgets show them).
- capture thread (`capture.thread.CaptureThread`): owns the camera or video file; blocks on
  the device; hands the newest frame to tracking through a one-slot mailbox (latest wins).
- tracking thread (`features.pipeline.TrackingThread`, or `features.recording.RecordingPlayer`
  when replaying a recording): owns the Tracker (MediaPipe); blocks only on the mailbox;
  pushes each FeatureFrame into the `FeatureTimeline` (a short lock) and calls the frame
  listeners, which must not block: this session's DSP controls (two floats, latest wins),
  MIDI control changes (`outputs.midi.MidiOut`, the port's lock around a send), OSC out
  (`outputs.osc.feed.OscFeed` -> `outputs.osc.sender.OscSender.send_frame`: one UDP sendto), and in the
  window the preview's `LatestFrame` and the performance recorder's queue.
- scheduler thread (`engine.scheduler.ChunkScheduler`): the only reader of
  `timeline.window()`; owns the chunk joins and the ring's write side; reads the latest
  params; waits only on a timer and on the generator's future; never holds a lock the
  callback needs. At each chunk start calls the chunk listeners (OSC /music/chunk, the
  stage view's chunk marks via a queued signal).
- generator thread (the scheduler's one-worker executor): owns the model; runs
  `source.render` for one chunk at a time; may take seconds.
- audio callback (PortAudio's thread, or the `file-sink` thread without a sound card): owns
  the ring's read side and the DSP state; copies a block out of the ring, applies the DSP
  path, and copies the block into the recorder's ring and the `AudioMonitor`. Never
  allocates a buffer, locks, logs, or waits on the model.
- WAV writer thread (`audio.output.WavRecorder`, `wav-writer`): drains the recorder's ring
  to disk; the file is renamed into place when the session stops (a full disk stops the
  recording, never the show; a session that played no music leaves an older file as it was).
- performance writer thread (window only, `ui.performance.PerformanceRecorder`): drains the
  tracking thread's queue, draws the overlay and encodes the video; muxed with the WAV
  when the session stops.
- MIDI clock thread (`outputs.midi.MidiOut`, when [midi] clock is on): sends 24 clocks per beat
  at the tempo the music plays at; shares the MIDI port's lock with the tracking thread.
- Ableton Link thread (`outputs.ableton_link.AbletonLink`, when [link] mode is not off): the Link
  peer's asyncio loop; the scheduler reads its tempo and beat for each window and, in conduct
  mode, sets its tempo from the window's performer tempo, both thread-safe Link calls.
Status readers call `status()` from their own threads; it only reads plain values.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..audio.dsp import DspPath, expression_index
from ..audio.monitor import AudioMonitor
from ..audio.output import BlockPlayer, WavRecorder, open_output
from ..audio.ring_buffer import RingBuffer
from ..engine.scheduler import ChunkScheduler, ChunkTiming
from ..engine.source import GenerationParams, MusicSource
from ..features.schema import FeatureFrame, TimelineWindow
from ..features.timeline import FeatureTimeline
from ..settings import Settings

FrameListener = Callable[[FeatureFrame, object], None]
ChunkListener = Callable[[int, int], None]
STATUS_INTERVAL = 0.25      # seconds between status updates to OSC while waiting
MONITOR_SECONDS = 2.0       # played audio kept for the stage view (spectrogram, meter)
FIRST_FRAME_SECONDS = 2.0   # the first chunk waits this long for the first tracked frame (a camera slow to start)


class SessionError(RuntimeError):
    """The session cannot be built as configured; the message says what to change."""


class TempoSync(Protocol):
    """A shared beat the music keeps (Ableton Link: `outputs.ableton_link.LinkSync`), attached by the
    composition root (`sync_with`): the scheduler's windows pass through `window`."""

    def window(self, window: TimelineWindow) -> TimelineWindow: ...

    def status(self): ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SessionStatus:
    """Plain values for the UI and OSC (the latency vocabulary of docs/architecture.md); None = not measured yet."""

    playing: bool
    output: str                          # device name, or "file" / "no output" without a sound card
    tracking_fps: float                  # recent frames per second (moving average)
    tracking_rate: float                 # frames tracked per second since start: what the run really got
    tracked_frames: int
    tracking_status: str
    rtf: float | None                    # recent chunks: audio seconds per render second
    sustained_rtf: float | None          # since start
    buffer_seconds: float                # audio buffered ahead of the playhead
    underruns: int                       # ring ran dry after the first sound + device underflows
    dropped_seconds: float               # silence those underruns played in place of music
    stalls: int                          # the output stopped pulling for STALL_SECONDS or more (audio/watchdog.py)
    stalled_seconds: float
    output_failure: str                  # "" unless the device failed mid-run and the file sink took over
    stretching: bool                     # generation is behind and the last chunk is being looped
    stretched_seconds: float
    control_latency: float | None        # visual event -> first played sample generated with it (the last chunk's)
    control_latency_mean: float | None   # the same over the recent chunks
    control_latency_max: float | None
    dsp_latency: float | None            # features -> the audio block that applies them
    time_to_first_sound: float | None
    chunk_index: int                     # chunk now playing (-1 before the first)
    played_seconds: float
    tempo: float                         # BPM the music follows (0 = not tracked)
    steering_words: tuple[str, ...]
    prompt: str
    error: str                           # "" unless generation failed
    recording_stopped: str               # "" unless the recording stopped early (a full disk) and why
    link: object | None                  # the tempo sync's status (Ableton Link's LinkStatus; None = none attached)


class LiveSession:
    """Camera (or recording) + tracking + a MusicSource -> scheduler -> ring -> speakers and/or file.

    `frames` is a `CaptureThread` (tracked here), or a recording (path or list of
    FeatureFrames, replayed in real time). `output`: "auto" (the sound card, else the file
    sink), "device" (the sound card or an error), "file" (no sound card, wall-clock paced).
    `record_advice`: how the command in use records, for the notice when nothing can be heard.
    """

    def __init__(self, settings: Settings, source: MusicSource, frames, *, output: str = "auto",
                 duration: float | None = None, record_advice: str = "pass --out WAV to record"):
        audio = settings.audio
        if source.sample_rate != audio.sample_rate:
            raise SessionError(f"the music source renders at {source.sample_rate} Hz but [audio] sample_rate "
                               f"is {audio.sample_rate}: set it to {source.sample_rate}")
        self.settings = settings
        self.source = source
        self.duration = duration
        self.notice = ""                 # one line for the performer (e.g. no sound card: file only)
        self.playing = False             # before an output reads it (MIDI's clock thread, at once)
        self._chunk_listeners: list[ChunkListener] = []
        self._expression = expression_index(audio.filter_expression)

        self.timeline = FeatureTimeline(settings.tracking.timeline_seconds)
        self.tracking = self._tracking(frames)
        self.tracking.add_listener(self._on_frame)
        self._tracked = threading.Event()    # a frame reached the timeline

        self.ring = RingBuffer(round(audio.buffer_seconds * audio.sample_rate))
        self.dsp = DspPath(audio.sample_rate, audio.block_size, min_gain=audio.min_gain,
                           filter_min_hz=audio.filter_min_hz, filter_max_hz=audio.filter_max_hz,
                           smoothing_ms=audio.dsp_smoothing_ms, enabled=audio.dsp)
        self.player = BlockPlayer(self.ring, self.dsp)
        try:
            self.output, no_card = open_output(self.player, audio, output)
        except BaseException:
            self.tracking.close()     # MediaPipe graphs are released even when no device opens
            raise
        if no_card:
            where = f"writing {audio.out} only" if audio.out else f"nothing is heard ({record_advice})"
            self.notice = f"no sound card: {no_card}; {where}"
        # The device pulls whole buffers at once (PulseAudio: its latency's worth in a burst),
        # so the ring keeps that much more in hand than the engine's own marks.
        device_buffer = self.output.latency_seconds
        self.monitor = AudioMonitor(round(MONITOR_SECONDS * audio.sample_rate))
        self.player.monitor = self.monitor
        self.link: TempoSync | None = None   # see `sync_with`
        self._closing: list = []             # outputs that close with the session (`close_with`)
        engine = settings.engine
        self.scheduler = ChunkScheduler(
            source, self.ring, self._window, GenerationParams.from_settings(settings.generation),
            ChunkTiming.from_settings(settings.generation, audio.sample_rate), realtime=True,
            min_lead_seconds=engine.min_lead_seconds + device_buffer,
            low_water_seconds=engine.low_water_seconds + device_buffer,
            loop_seconds=engine.loop_seconds, on_chunk=self._on_chunk)
        self.player.start_samples = self.scheduler.low_water   # the first sound rides out the device's burst
        self.recorder: WavRecorder | None = None
        self.started_at = 0.0

    # -- construction ---------------------------------------------------------------------
    def _tracking(self, frames):
        from ..capture.thread import CaptureThread

        if isinstance(frames, CaptureThread):
            from ..features.pipeline import TrackingThread

            self.capture = frames
            return TrackingThread.open(frames, self.settings.tracking, self.timeline)   # MediaPipe loads now, not on stage
        from ..features.recording import RecordingPlayer

        self.capture = None
        if isinstance(frames, (str, os.PathLike, Sequence)):
            return RecordingPlayer(frames, self.timeline, realtime=True, loop=True)
        raise TypeError(f"frames must be a CaptureThread, a recording path or a list of FeatureFrames, "
                        f"got {type(frames).__name__}")

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start tracking, generation and output; heavy loading happened before (build_source)."""
        audio = self.settings.audio
        self.playing = True
        try:
            if audio.out:
                limit = None if self.duration is None else round(self.duration * audio.sample_rate)
                self.recorder = WavRecorder(audio.out, audio.sample_rate, max_samples=limit)
                self.player.tap = self.recorder
            if self.capture is not None:
                self.capture.start()
            if self.settings.tracking.calibrate_at_start:
                self.tracking.calibrate()   # neutral face as each training take had it (train/prepare.py)
            self.tracking.start()
            self.started_at = time.monotonic()
            self.scheduler.start()
            self.output.start()
        except BaseException:
            self.stop()       # whatever did start is stopped; a partial recording is still saved
            raise

    def wait(self, timeout: float | None = None, stop: threading.Event | None = None,
             on_status: Callable[[SessionStatus], None] | None = None) -> bool:
        """Block until `duration` seconds have been played, `timeout` passed or `stop` is set;
        False on a generation error. `on_status` gets the status a few times a second."""
        deadline = None if timeout is None else time.monotonic() + timeout
        target = None if self.duration is None else round(self.duration * self.settings.audio.sample_rate)
        block = self.settings.audio.block_size
        next_status = 0.0
        while self.scheduler.error is None:
            if target is not None and self.player.blocks_played * block >= target:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return True
            if stop is not None and stop.is_set():
                return True
            if on_status is not None and time.monotonic() >= next_status:
                on_status(self.status())
                next_status = time.monotonic() + STATUS_INTERVAL
            time.sleep(0.02)
        return False

    def stop(self) -> Path | None:
        """Stop output first (the recording ends exactly there), then generation and tracking.

        Returns the path of the finished recording, if any.
        """
        if not self.playing:
            return None
        self.playing = False
        self.output.stop()
        self.scheduler.stop()
        self.tracking.stop()
        for output in self._closing:
            output.close()
        if self.capture is not None:
            self.capture.stop()
        self.tracking.close()
        if self.recorder is None:
            return None
        if self.ring.read_index == 0:     # no music was played: an older file is worth more than silence
            self.recorder.abort()
            return None
        return self.recorder.close()

    # -- control (any thread) -------------------------------------------------------------
    def set_params(self, params: GenerationParams) -> None:
        """Prompt, guidance, temperature...: the next chunk uses them."""
        self.scheduler.set_params(params)

    def set_adaptor(self, path: str | None) -> None:
        """Load an adaptor checkpoint (or None to remove it); the next chunk uses it."""
        if not self.source.takes_adaptor:
            raise SessionError(f"{self.source.name} takes no adaptor; load MusicGen weights first")
        from .source import warn_if_played_differently

        warn_if_played_differently(self.source.load_adaptor(path), self.settings)

    def calibrate(self) -> bool:
        """The next half second of face becomes the neutral face."""
        return self.tracking.calibrate()

    def sync_with(self, sync: TempoSync) -> None:
        """Before `start`: keep `sync`'s beat (each chunk's window passes through `sync.window`), report its
        status, and close it with the session."""
        self.link = sync
        self.close_with(sync)

    def close_with(self, output) -> None:
        """Before `start`: `output.close()` when the session stops (after generation and tracking)."""
        self._closing.append(output)

    def add_frame_listener(self, listener: FrameListener) -> None:
        """`listener(frame, image_bgr or None)` on the tracking thread; must be quick."""
        self.tracking.add_listener(listener)

    def add_chunk_listener(self, listener: ChunkListener) -> None:
        """`listener(chunk_index, start_frame)` on the scheduler thread when a chunk starts playing."""
        self._chunk_listeners.append(listener)

    def _on_frame(self, frame: FeatureFrame, image) -> None:
        """DSP controls from each frame; a lost face keeps the filter where it was (no sudden dull sound)."""
        controls = self.dsp.controls
        expression = float(frame.expression[self._expression]) if frame.face_found else controls.expression
        controls.set(frame.motion_energy, expression)
        self._tracked.set()

    def _window(self, n_frames: int):
        """The scheduler's window; Link conducts it in follow mode, and leads with it in conduct mode.
        The first one waits for the first tracked frame: music conditioned on an empty timeline (no
        face, no time) would begin from a performer nobody saw, a state training never shows."""
        if not self._tracked.is_set():
            self._tracked.wait(FIRST_FRAME_SECONDS)
        window = self.timeline.window(n_frames)
        return window if self.link is None else self.link.window(window)

    def _on_chunk(self, index: int, start_frame: int) -> None:
        for listener in self._chunk_listeners:
            listener(index, start_frame)

    # -- status ---------------------------------------------------------------------------
    def status(self) -> SessionStatus:
        sched, sr = self.scheduler, self.settings.audio.sample_rate
        tracking = self.tracking.stats()
        first_sound = self.player.first_sound_time
        measured = sched.chunks_done > 0
        played_chunk = sched.playing_chunk >= 0
        elapsed = time.monotonic() - self.started_at if self.started_at else 0.0
        music = self.source.state()
        latencies = list(sched.control_latencies)
        return SessionStatus(
            playing=self.playing,
            output=self.output.device_name or ("file" if self.settings.audio.out else "no output"),
            tracking_fps=float(tracking.fps),
            tracking_rate=tracking.processed / elapsed if elapsed > 0 else 0.0,
            tracked_frames=tracking.processed,
            tracking_status=tracking.status,
            rtf=sched.rtf if measured else None,
            sustained_rtf=sched.sustained_rtf if measured else None,
            buffer_seconds=self.ring.available() / sr,
            underruns=self.ring.underrun_blocks + self.output.underflows,
            dropped_seconds=(self.ring.underrun_samples + self.output.dropped_samples) / sr,
            stalls=self.output.stalls, stalled_seconds=self.output.stalled_seconds,
            output_failure=self.output.failure,
            stretching=sched.stretching,
            stretched_seconds=sched.stretched_seconds,
            control_latency=sched.control_latency if played_chunk and sched.control_latency > 0 else None,
            control_latency_mean=sum(latencies) / len(latencies) if latencies else None,
            control_latency_max=max(latencies) if latencies else None,
            dsp_latency=self.dsp.latency_seconds if self.dsp.controls.stamp > 0 else None,
            time_to_first_sound=first_sound - self.started_at if first_sound > 0 else None,
            chunk_index=sched.playing_chunk,
            played_seconds=self.player.blocks_played * self.settings.audio.block_size / sr,
            tempo=music.tempo,
            steering_words=music.steering_words,
            prompt=music.prompt or sched.params.prompt,
            error="" if sched.error is None else f"{type(sched.error).__name__}: {sched.error}",
            recording_stopped=self.recorder.stopped if self.recorder is not None else "",
            link=self.link.status() if self.link is not None else None,
        )

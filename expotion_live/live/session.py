"""The live session: the one place where capture, tracking, generation and audio threads are wired.

Thread map (who owns what, what each may block on, what links it to the next):
- capture thread (`capture.thread.CaptureThread`): owns the camera or video file;
  blocks on the device; hands the newest frame over through a one-slot mailbox.
- tracking thread (`features.pipeline.TrackingThread`, or `features.recording.
  RecordingPlayer` when replaying a recording): owns the Tracker; blocks only on the
  mailbox; pushes each FeatureFrame into the `FeatureTimeline` (a short lock) and calls
  the frame listeners: this session's DSP-control writer (two floats, latest wins),
  then OSC and UI listeners, which must not block.
- scheduler thread (`engine.scheduler.ChunkScheduler`): owns the chunk joins and the
  ring's write side; reads `timeline.window()` and the latest params; waits only on a
  timer and on the generator's future; never holds a lock the callback needs.
- generator thread (the scheduler's one-worker executor): owns the model; runs
  `source.render` for one chunk at a time; may take seconds.
- audio callback (PortAudio's thread, or the file-sink thread without a sound card):
  owns the ring's read side and the DSP state; copies a block out of the ring, applies
  the DSP path, and copies the block into the recorder's ring. Never allocates a
  buffer, locks, logs, or waits on the model.
- WAV writer thread (`audio.output.WavRecorder`): drains the recorder's ring to disk;
  the file is renamed into place when the session stops (a full disk stops the recording,
  never the show; a session that played no music leaves an older file as it was).
- MIDI clock thread (`osc.midi.MidiOut`, when [midi] clock is on): sends 24 clocks per
  beat at the tempo the music plays at; shares the MIDI port's lock with the tracking
  thread's control changes, held only around a send.
- Ableton Link thread (`osc.ableton_link.AbletonLink`, when [link] mode is not off): the
  Link peer's asyncio loop; the scheduler reads its tempo and beat for each window
  (follow) and the chunk listener sets its tempo (conduct), both thread-safe Link calls.
Status readers (UI, OSC) call `status()` from their own threads; it only reads plain values.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .audio.dsp import DspPath, expression_index
from .audio.monitor import AudioMonitor
from .audio.output import AudioDeviceError, AudioStream, BlockPlayer, FileSink, WavRecorder
from .audio.ring_buffer import RingBuffer
from .engine.scheduler import ChunkScheduler, ChunkTiming
from .engine.source import GenerationParams, MusicSource
from .features.schema import FeatureFrame
from .features.timeline import FeatureTimeline
from .atomic import OutputPathError, check_output
from .model.commands import add_model_flags, model_overrides
from .model.download import has_weights, missing_files
from . import settings as settings_mod
from .osc.ableton_link import LinkStatus, open_link
from .osc.control import ControlError
from .osc.midi import open_midi
from .osc.targets import OscTargetError
from .settings import Settings

FrameListener = Callable[[FeatureFrame, object], None]
ChunkListener = Callable[[int, int], None]
OUTPUT_MODES = ("auto", "device", "file")
STATUS_INTERVAL = 0.25      # seconds between status updates to OSC while waiting
MAX_SECONDS = 7 * 24 * 3600  # longest --duration: a week-long installation
MONITOR_SECONDS = 2.0       # played audio kept for the stage view (spectrogram, meter)
STALL_SECONDS = 2.0         # a source silent this long is reported (a camera delivers 15-60 frames a second)


class SessionError(RuntimeError):
    """The session cannot be built as configured; the message says what to change."""


@dataclass(frozen=True)
class SessionStatus:
    """Plain values for the UI and OSC (DESIGN.md §5 names); None = not measured yet."""

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
    stretching: bool                     # generation is behind and the last chunk is being looped
    stretched_seconds: float
    control_latency: float | None        # visual event -> first played sample generated with it
    dsp_latency: float | None            # features -> the audio block that applies them
    time_to_first_sound: float | None
    chunk_index: int                     # chunk now playing (-1 before the first)
    played_seconds: float
    tempo: float                         # BPM the music follows (0 = not tracked)
    steering_words: tuple[str, ...]
    prompt: str
    error: str                           # "" unless generation failed
    recording_stopped: str               # "" unless the recording stopped early (a full disk) and why
    link: LinkStatus | None              # the Ableton Link session (None = link.mode off or unavailable)


class LiveSession:
    """Camera (or recording) + tracking + a MusicSource -> scheduler -> ring -> speakers and/or file.

    `frames` is a `CaptureThread` (tracked here), or a recording (path or list of
    FeatureFrames, replayed in real time). `output`: "auto" (the sound card, else the file
    sink), "device" (the sound card or an error), "file" (no sound card, wall-clock paced).
    """

    def __init__(self, settings: Settings, source: MusicSource, frames, *, output: str = "auto",
                 duration: float | None = None):
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        audio = settings.audio
        if source.sample_rate != audio.sample_rate:
            raise SessionError(f"the music source renders at {source.sample_rate} Hz but [audio] sample_rate "
                               f"is {audio.sample_rate}: set it to {source.sample_rate}")
        self.settings = settings
        self.source = source
        self.duration = duration
        self.notice = ""                 # one line for the performer (e.g. no sound card: file only)
        self._chunk_listeners: list[ChunkListener] = []
        self._expression = expression_index(audio.filter_expression)

        self.timeline = FeatureTimeline(settings.tracking.timeline_seconds)
        self.tracking = self._tracking(frames)
        self.tracking.add_listener(self._on_frame)

        self.ring = RingBuffer(round(audio.buffer_seconds * audio.sample_rate))
        self.dsp = DspPath(audio.sample_rate, audio.block_size, min_gain=audio.min_gain,
                           filter_min_hz=audio.filter_min_hz, filter_max_hz=audio.filter_max_hz,
                           smoothing_ms=audio.dsp_smoothing_ms, enabled=audio.dsp)
        self.player = BlockPlayer(self.ring, self.dsp)
        try:
            self.output = self._open_output(output)
        except BaseException:
            if self._tracker is not None:
                self._tracker.close()     # MediaPipe graphs are released even when no device opens
            raise
        # The device pulls whole buffers at once (PulseAudio: its latency's worth in a burst),
        # so the ring keeps that much more in hand than the engine's own marks.
        device_buffer = self.output.latency_seconds if isinstance(self.output, AudioStream) else 0.0
        self.monitor = AudioMonitor(round(MONITOR_SECONDS * audio.sample_rate))
        self.player.monitor = self.monitor
        # MIDI and Link are extras: one line in `notice` when they cannot be had, and the show goes on.
        self.link, link_notice = open_link(settings.link)
        self.midi, midi_notice = open_midi(settings.midi, lambda: (self.playing, _tracked_tempo(self.source)))
        if self.midi is not None:
            self.tracking.add_listener(self.midi.on_frame)
        self.notice = "; ".join(line for line in (self.notice, link_notice, midi_notice) if line)
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
        self.playing = False

    # -- construction ---------------------------------------------------------------------
    def _tracking(self, frames):
        from .capture.thread import CaptureThread

        if isinstance(frames, CaptureThread):
            from .features.pipeline import TrackingThread
            from .features.tracker import Tracker

            self.capture = frames
            self._tracker = Tracker(self.settings.tracking)      # MediaPipe graphs load now, not on stage
            return TrackingThread(frames, self._tracker, self.timeline)
        from .features.recording import RecordingPlayer

        self.capture = self._tracker = None
        if isinstance(frames, (str, os.PathLike, Sequence)):
            return RecordingPlayer(frames, self.timeline, realtime=True, loop=True)
        raise TypeError(f"frames must be a CaptureThread, a recording path or a list of FeatureFrames, "
                        f"got {type(frames).__name__}")

    def _open_output(self, mode: str):
        audio = self.settings.audio
        if mode != "file":
            try:
                return AudioStream(self.player, audio.device, audio.sample_rate, audio.block_size, audio.latency)
            except AudioDeviceError as err:
                if mode == "device" or audio.device:
                    raise
                where = f"writing {audio.out} only" if audio.out else "nothing is heard (pass --out to record)"
                self.notice = f"no sound card: {err}; {where}"
        return FileSink(self.player, audio.sample_rate, audio.block_size, realtime=True)

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
        for extra in (self.midi, self.link):
            if extra is not None:
                extra.close()
        if self.capture is not None:
            self.capture.stop()
        if self._tracker is not None:
            self._tracker.close()
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
        if not hasattr(self.source, "set_adaptor"):
            raise SessionError(f"{type(self.source).__name__} takes no adaptor; load MusicGen weights first")
        adaptor = None
        if path:
            from .model.adaptor import load_adaptor

            adaptor = load_adaptor(path, self.source.musicgen)
        self.source.set_adaptor(adaptor)

    def calibrate(self) -> bool:
        """The next half second of face becomes the neutral face."""
        return self.tracking.calibrate()

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

    def _window(self, n_frames: int):
        """The scheduler's window; in Link's follow mode the Link session conducts it."""
        window = self.timeline.window(n_frames)
        return window if self.link is None else self.link.window(window)

    def _on_chunk(self, index: int, start_frame: int) -> None:
        if self.link is not None:
            self.link.lead(_confident_tempo(self.source), time.monotonic())
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
        return SessionStatus(
            playing=self.playing,
            output=getattr(self.output, "device_name", "file" if self.settings.audio.out else "no output"),
            tracking_fps=float(tracking.fps),
            tracking_rate=tracking.processed / elapsed if elapsed > 0 else 0.0,
            tracked_frames=tracking.processed,
            tracking_status=tracking.status,
            rtf=sched.rtf if measured else None,
            sustained_rtf=sched.sustained_rtf if measured else None,
            buffer_seconds=self.ring.available() / sr,
            underruns=self.ring.underrun_blocks + self.output.underflows,
            stretching=sched.stretching,
            stretched_seconds=sched.stretched_seconds,
            control_latency=sched.control_latency if played_chunk and sched.control_latency > 0 else None,
            dsp_latency=self.dsp.latency_seconds if self.dsp.controls.stamp > 0 else None,
            time_to_first_sound=first_sound - self.started_at if first_sound > 0 else None,
            chunk_index=sched.playing_chunk,
            played_seconds=self.player.blocks_played * self.settings.audio.block_size / sr,
            tempo=float(_tracked_tempo(self.source)),
            steering_words=tuple(getattr(self.source, "steering_words", ())),
            prompt=getattr(self.source, "prompt_used", "") or sched.params.prompt,
            error="" if sched.error is None else f"{type(sched.error).__name__}: {sched.error}",
            recording_stopped=self.recorder.stopped if self.recorder is not None else "",
            link=self.link.status() if self.link is not None else None,
        )


def _tracked_tempo(source) -> float:
    """The BPM the music follows: the synth plays at its tracker's tempo; MusicGen follows the
    steering tempo only once it is locked (then it is in the prompt). 0 = no tempo."""
    own = getattr(source, "tempo", None)
    if own is not None:
        return float(own.bpm)
    steered = getattr(getattr(source, "steering", None), "tempo", None)
    return float(steered.bpm) if steered is not None and steered.locked else 0.0


def _confident_tempo(source) -> float:
    """The tempo Link's conduct mode may give the band: the tracked one once it has locked, else 0."""
    tracker = getattr(source, "tempo", None) or getattr(getattr(source, "steering", None), "tempo", None)
    return float(tracker.bpm) if tracker is not None and tracker.locked else 0.0


def build_source(settings: Settings) -> MusicSource:
    """MusicGen (with adaptor and steering) when weights exist, else the synth; `engine.kind` forces one.

    Loads everything heavy now, before any stream opens, and warms the model up.
    """
    kind, model, gen = settings.engine.kind, settings.model, settings.generation
    if kind not in ("auto", "musicgen", "synth"):
        raise SessionError(f"engine.kind must be auto, musicgen or synth, got {kind!r}")
    if kind == "synth" or (kind == "auto" and not has_weights(model.dir)):
        from .engine.synth import SynthSource

        return SynthSource(sample_rate=settings.audio.sample_rate, seed=max(gen.seed, 0))
    missing = missing_files(Path(model.dir))
    if missing and Path(model.dir).is_dir() and any(Path(model.dir).iterdir()):
        raise SessionError(f"{model.dir} is not a complete MusicGen folder: missing {', '.join(missing)}; "
                           f"run `expotion-live download small` again (it resumes) or pass --model DIR")
    if missing:
        raise SessionError(f"no MusicGen weights in {model.dir}: run `expotion-live download small` "
                           f"or pass --model DIR (or --engine synth)")
    if gen.context_seconds + max(gen.chunk_seconds, gen.first_chunk_seconds) + 0.2 > gen.window_seconds:
        raise SessionError(f"generation.window_seconds ({gen.window_seconds:g}) must exceed context_seconds "
                           f"({gen.context_seconds:g}) + chunk_seconds ({gen.chunk_seconds:g}) by 0.2 s: the stream "
                           f"slides to the last context_seconds and then needs room for a chunk")
    from .engine.musicgen_source import MusicGenSource
    from .engine.steering import PromptSteerer
    from .model.generate import MusicGen

    import torch

    torch.set_num_threads(max(1, model.threads))     # the generator shares the CPU with tracking
    musicgen = MusicGen.load(model.dir, device=model.device, precision=model.precision)
    adaptor = None
    if model.adaptor:
        from .model.adaptor import load_adaptor

        adaptor = load_adaptor(model.adaptor, musicgen)
    source = MusicGenSource(
        musicgen, adaptor, PromptSteerer() if gen.steer_prompt else None,
        context_frames=round(gen.context_seconds * musicgen.frame_rate),
        window_frames=round(gen.window_seconds * musicgen.frame_rate),
        decode_context_frames=round(gen.decode_context_seconds * musicgen.frame_rate),
        steer_prompt=gen.steer_prompt, seed=None if gen.seed < 0 else gen.seed)
    source.warm_up(GenerationParams.from_settings(gen), FeatureTimeline(seconds=1.0).window(   # zeros: no one yet
        round((gen.context_seconds + gen.chunk_seconds) * musicgen.frame_rate)))
    return source


# -- the `run` subcommand ------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the live path with no window: camera or video in, music out (installations, CI)",
        description="Track a camera or a video file, generate music live and play it; --out records "
                    "exactly what was played. Without a sound card the file is written alone.")
    p.add_argument("--headless", action="store_true", help="no window (required: the window is `expotion-live gui`)")
    p.add_argument("--video", metavar="FILE", help="performance video instead of the camera (settings: camera.source)")
    p.add_argument("--camera", metavar="SPEC", help="camera index or name (settings: camera.source)")
    p.add_argument("--out", metavar="WAV", help="record what is played to this WAV file (settings: audio.out)")
    p.add_argument("--duration", type=settings_mod.number(float, 0.01, MAX_SECONDS), metavar="S",
                   help="stop after S seconds of audio (default: until Ctrl-C or SIGTERM)")
    add_model_flags(p)
    p.add_argument("--engine", choices=("auto", "musicgen", "synth"), help="music source (settings: engine.kind)")
    p.add_argument("--device", metavar="NAME", help="audio output device, substring of its name (settings: audio.device)")
    p.add_argument("--file-only", action="store_true", help="do not open a sound card; write --out paced in real time")
    p.set_defaults(handler=run_live)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    flags = {"camera.source": args.video or args.camera, "audio.out": args.out, "engine.kind": args.engine,
             "audio.device": args.device}
    return {**model_overrides(args), **{key: value for key, value in flags.items() if value is not None}}


def _fail(message: str) -> int:
    print(f"expotion-live run: {message}", file=sys.stderr)
    return 1


def run_live(args: argparse.Namespace, settings: Settings) -> int:
    """Handler: build the source, open the frames, play for --duration (or until Ctrl-C), report."""
    from .capture.sources import CaptureError, open_source
    from .capture.thread import CaptureThread
    from .presets import presets_dir
    from .settings import override

    settings = override(settings, _overrides(args))
    if not (args.headless or settings.engine.headless):
        return _fail("pass --headless (the window is `expotion-live gui`)")
    if args.video and not Path(args.video).is_file():
        return _fail(f"video file {args.video} does not exist")
    if args.file_only and not settings.audio.out:
        return _fail("--file-only needs --out WAV")
    if settings.audio.out:
        try:
            check_output(settings.audio.out, (".wav",), "--out")
        except OutputPathError as err:
            return _fail(str(err))
    frames = None
    try:
        source = build_source(settings)
        frames = CaptureThread(open_source(settings.camera.source, settings.camera))
        session = LiveSession(settings, source, frames, output="file" if args.file_only else "auto",
                              duration=args.duration)
    except (SessionError, AudioDeviceError, CaptureError, ValueError, OSError) as err:
        if frames is not None:
            frames.stop()     # never started: this only closes the camera or file
        return _fail(str(err).splitlines()[0])
    if session.notice:
        print(f"expotion-live run: {session.notice}", file=sys.stderr)
    print(f"expotion-live run: {type(source).__name__} -> {session.status().output}"
          f"{' + ' + settings.audio.out if settings.audio.out else ''}", file=sys.stderr)
    try:
        osc = HeadlessOsc(session, settings, presets_dir(getattr(args, "config", None) or settings_mod.default_path()))
    except OscTargetError as err:
        frames.stop()
        return _fail(str(err))
    try:
        session.start()
    except (OSError, RuntimeError) as err:   # e.g. --out in a folder that cannot be written
        osc.close()
        return _fail(str(err).splitlines()[0])
    notices = RunNotices()

    def on_status(status: SessionStatus) -> None:
        osc.on_status(status)
        notices.update(status)

    try:
        ok = session.wait(stop=osc.stop_requested, on_status=on_status)
    except KeyboardInterrupt:
        ok = True
    status = session.status()            # what was played, before teardown
    written = session.stop()
    osc.close()
    recording_stopped = session.recorder.stopped if session.recorder is not None else ""   # may be the last write
    notices.update(dataclasses.replace(status, recording_stopped=recording_stopped))
    print(_summary(status, written), file=sys.stderr)
    if settings.audio.out and written is None:
        print(f"expotion-live run: no music was played, so {settings.audio.out} was not written", file=sys.stderr)
    if not ok:
        return _fail(f"generation failed: {status.error}")
    return 1 if recording_stopped else 0


class RunNotices:
    """One line on stderr for each change the operator of a headless run must hear of at once:
    the recording stopped (a full disk), the camera or video ended, failed, or stopped delivering,
    the number of Ableton Link peers changed."""

    def __init__(self, stall_seconds: float = STALL_SECONDS):
        self.stall_seconds = stall_seconds
        self._said: set[str] = set()
        self._status = "running"
        self._frames, self._frames_since = 0, time.monotonic()
        self._stalled = False
        self._link_peers = 0

    def update(self, status: SessionStatus) -> None:
        if status.link is not None and status.link.peers != self._link_peers:
            self._link_peers = status.link.peers
            print(f"expotion-live run: Ableton Link ({status.link.mode}): {self._link_peers} "
                  f"peer{'' if self._link_peers == 1 else 's'}, {status.link.tempo:.1f} BPM", file=sys.stderr)
        if status.recording_stopped:
            self._say(status.recording_stopped)
        if status.tracking_status != self._status:
            self._status = status.tracking_status
            if self._status not in ("running", "stopped"):
                self._say(f"tracking {self._status} at {status.played_seconds:.1f} s; "
                          f"the music goes on from the last features")
        now = time.monotonic()
        if status.tracked_frames != self._frames:
            if self._stalled:
                print(f"expotion-live run: frames arrive again at {status.played_seconds:.1f} s", file=sys.stderr)
            self._frames, self._frames_since, self._stalled = status.tracked_frames, now, False
        elif (not self._stalled and self._frames > 0 and self._status == "running"   # MediaPipe's start is not a stall
              and now - self._frames_since >= self.stall_seconds):
            self._stalled = True
            print(f"expotion-live run: no frames from the camera or video for {self.stall_seconds:g} s "
                  f"at {status.played_seconds:.1f} s; the music goes on from the last features", file=sys.stderr)

    def _say(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            print(f"expotion-live run: {line}", file=sys.stderr)


class HeadlessOsc:
    """OSC for a session with no window: tracking and music state out, the control port in.

    The control port drives the session directly (`osc.control.Controls`): prompt,
    guidance and temperature apply at the next chunk, calibrate and presets as in the
    window; `/expotion/stop` ends the run (the recording is saved), `/expotion/start`
    is accepted while playing.
    """

    def __init__(self, session: LiveSession, settings: Settings, presets: Path):
        from .osc.control import ControlServer
        from .osc.link import OscLink
        from .osc.sender import OscSender
        from .osc.targets import parse_target, parse_targets

        self.session = session
        self.settings = settings     # the live settings: control messages and presets change them in turn
        self.presets = presets
        self.stop_requested = threading.Event()
        osc = settings.osc
        self.sender = OscSender(parse_targets(osc.targets, osc.mode),
                                ableton=parse_target(osc.ableton) if osc.ableton else None)
        self.link = OscLink(self.sender, settings.camera)
        session.add_frame_listener(self.link.on_frame)
        session.add_chunk_listener(self.link.on_chunk)
        self.server = None
        if osc.control_port:
            try:
                self.server = ControlServer(self, osc.control_port, osc.control_host).start()
            except ControlError as err:   # the show goes on without remote control
                print(f"expotion-live run: no OSC control: {err}", file=sys.stderr)

    def on_status(self, status: SessionStatus) -> None:
        self.link.on_status(dataclasses.asdict(status))

    # osc.control.Controls, called on the control server's thread
    def start(self) -> None:
        if not self.session.playing:
            raise SessionError("a stopped headless run cannot restart; start it again")

    def stop(self) -> None:
        self.stop_requested.set()

    def _set(self, settings: Settings) -> None:
        self.settings = settings
        self.session.set_params(GenerationParams.from_settings(settings.generation))

    def set_prompt(self, prompt: str) -> None:
        self._set(settings_mod.override(self.settings, {"generation.prompt": prompt}))

    def set_guidance(self, cfg: float) -> None:
        self._set(settings_mod.override(self.settings, {"generation.cfg": cfg}))

    def set_temperature(self, temperature: float) -> None:
        self._set(settings_mod.override(self.settings, {"generation.temperature": temperature}))

    def calibrate(self) -> None:
        self.session.calibrate()

    def load_preset(self, name: str) -> None:
        from .presets import apply_preset

        self._set(apply_preset(self.settings, self.presets, name))

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.link.on_stopped()
        self.sender.close()


def _summary(status: SessionStatus, written: Path | None) -> str:
    def seconds(value):
        return "-" if value is None else f"{value:.2f} s"

    rtf = "-" if status.sustained_rtf is None else f"{status.sustained_rtf:.2f}"
    return (f"played {status.played_seconds:.1f} s{f' -> {written}' if written else ''}; RTF {rtf}, "
            f"first sound {seconds(status.time_to_first_sound)}, control latency {seconds(status.control_latency)}, "
            f"DSP latency {seconds(status.dsp_latency)}, underruns {status.underruns}, "
            f"stretched {status.stretched_seconds:.1f} s, tracking {status.tracking_rate:.0f} fps over the run")

"""The headless `run` command: the live app with no window (installations, CI), driven from the main thread.

It composes the same parts as the window (`LiveController` opens the session and owns
OSC out and the control port); `/expotion/stop` or Ctrl-C/SIGTERM ends the run with the
recording saved. Threads: see the map in `live/session.py`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import settings as settings_mod
from ..atomic import OutputInUseError, OutputLock, OutputPathError, check_output
from ..audio.output import AudioDeviceError
from .common import add_device_flag, add_model_flags, fail, model_overrides, number
from ..outputs.osc.targets import OscTargetError
from ..settings import Settings
from ..live.controller import LiveController, check_osc
from ..live.session import SessionError, SessionStatus

MAX_SECONDS = 7 * 24 * 3600  # longest --duration: a week-long installation
CONTROL_LINE_SECONDS = 1.0  # a fader sweeping a control prints one line a second, with its latest value
STALL_SECONDS = 2.0         # a source silent this long is reported (a camera delivers 15-60 frames a second)
_fail = functools.partial(fail, command="run")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the live path with no window: camera or video in, music out (installations, CI)",
        description="Track a camera or a video file, generate music live and play it; --out records "
                    "exactly what was played. Without a sound card the file is written alone.")
    p.add_argument("--headless", action="store_true", help="no window (required: the window is `expotion-live gui`)")
    p.add_argument("--video", metavar="FILE", help="performance video instead of the camera (settings: camera.source)")
    p.add_argument("--camera", metavar="SPEC", help="camera index or name (settings: camera.source)")
    p.add_argument("--out", metavar="WAV", help="record what is played to this WAV file (settings: audio.out)")
    p.add_argument("--codes-out", metavar="NPZ",
                   help="save every generated code frame (codes [4, frames]), the time of the video frame at its "
                        "decoder position (frame_times: seconds since the first captured frame, so seconds into "
                        "a video), its chunk, when each chunk was heard and its control latency: MusicGen only")
    p.add_argument("--tracking-out", metavar="NPZ",
                   help="with --codes-out, also save every tracked frame (the `track --record` format), to "
                        "replay the take or condition on exactly what the run saw")
    p.add_argument("--duration", type=number(float, 0.01, MAX_SECONDS), metavar="S",
                   help="stop after S seconds of audio (default: until Ctrl-C or SIGTERM)")
    add_model_flags(p)
    add_device_flag(p)
    p.add_argument("--engine", choices=settings_mod.CHOICES["engine.kind"], help="music source (settings: engine.kind)")
    p.add_argument("--audio-output", metavar="NAME",
                   help="audio output device, substring of its name (settings: audio.device)")
    p.add_argument("--file-only", action="store_true", help="do not open a sound card; write --out paced in real time")
    p.add_argument("--osc", metavar="[MODE@]HOST:PORT", action="append",
                   help="OSC destination (repeatable; replaces [osc] targets), e.g. 127.0.0.1:9000, faceosc@127.0.0.1")
    p.set_defaults(handler=run_live)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    flags = {"camera.source": args.video or args.camera, "audio.out": args.out, "engine.kind": args.engine,
             "audio.device": args.audio_output, "model.device": args.device,
             "osc.targets": tuple(args.osc) if args.osc else None}
    return {**model_overrides(args), **{key: value for key, value in flags.items() if value is not None}}




def run_live(args: argparse.Namespace, settings: Settings) -> int:
    """Handler: build the source, open the frames, play for --duration (or until Ctrl-C), report."""
    from ..capture.sources import CaptureError, video_problem
    from ..presets import presets_dir

    if args.device is not None and not settings_mod.is_choice("model.device", args.device):
        return _fail(f"--device is the compute device ({', '.join(settings_mod.CHOICES['model.device'])}), "
                     f"not {args.device!r}; "
                     f"the audio output is --audio-output NAME")
    settings = settings_mod.override(settings, _overrides(args))
    if not (args.headless or settings.engine.headless):
        return _fail("pass --headless (the window is `expotion-live gui`)")
    if args.video and (problem := video_problem(Path(args.video))):
        return _fail(problem)
    if args.file_only and not settings.audio.out:
        return _fail("--file-only needs --out WAV")
    lock = None
    try:
        if settings.audio.out:
            check_output(settings.audio.out, (".wav",), "--out")
            lock = OutputLock(settings.audio.out, "--out")
        if args.codes_out:
            check_output(args.codes_out, (".npz",), "--codes-out")
        if args.tracking_out:
            if not args.codes_out:
                raise OutputPathError("--tracking-out needs --codes-out (its clock places the tracked frames)")
            check_output(args.tracking_out, (".npz",), "--tracking-out")
        check_osc(settings)
    except (OutputPathError, OutputInUseError, OscTargetError) as err:
        return _fail(str(err))
    controller = LiveController(settings, presets_dir(getattr(args, "config", None) or settings_mod.default_path()),
                                notice=lambda line: print(f"expotion-live run: {line}", file=sys.stderr))
    codes = None
    if args.codes_out:
        codes = CodeLog(tracking=bool(args.tracking_out))
        controller.build_source = codes.recording(controller.build_source)
    try:
        return _play(controller, settings, args, codes)
    except (SessionError, AudioDeviceError, CaptureError, ValueError, OSError) as err:
        return _fail(str(err).splitlines()[0])
    finally:
        controller.close()
        if lock is not None:
            lock.release()


def _play(controller: LiveController, settings: Settings, args: argparse.Namespace, codes: CodeLog | None) -> int:
    """Open, start and wait on the session (logging its codes to `codes`); the controller is closed by the caller."""
    controller.set_targets(settings.osc.targets)
    session = controller.open_session(settings, output="file" if args.file_only else "auto", duration=args.duration)
    if codes is not None:
        session.add_frame_listener(codes.on_frame)
    if session.notice:
        print(f"expotion-live run: {session.notice}", file=sys.stderr)
    for extra in (controller.midi, controller.ableton_link):
        if extra is not None:
            print(f"expotion-live run: {extra.description}", file=sys.stderr)
    print(f"expotion-live run: {type(session.source).__name__} -> {session.status().output}"
          f"{' + ' + settings.audio.out if settings.audio.out else ''}", file=sys.stderr)
    stop_requested = threading.Event()

    def start() -> None:
        if not session.playing:
            raise SessionError("a stopped headless run cannot restart; start it again")

    controller.on_start, controller.on_stop = start, stop_requested.set
    control_lines = ControlLines()
    controller.on_accepted = control_lines.accepted
    if settings.osc.control_port:
        where = controller.open_control_port()
        if controller.control is None:   # the show goes on without remote control
            print(f"expotion-live run: no OSC control: {where}", file=sys.stderr)
    try:
        session.start()
    except (OSError, RuntimeError) as err:   # e.g. --out in a folder that cannot be written
        controller.close_session()
        return _fail(str(err).splitlines()[0])
    notices = RunNotices()

    def on_status(status: SessionStatus) -> None:
        controller.on_status(status)
        notices.update(status)
        control_lines.flush()

    try:
        ok = session.wait(stop=stop_requested, on_status=on_status)
    except KeyboardInterrupt:
        ok = True
    status = session.status()            # what was played, before teardown
    written = session.stop()
    controller.close_session()
    if codes is not None:
        codes.save(args.codes_out, session, args.tracking_out)
    recording_stopped = session.recorder.stopped if session.recorder is not None else ""   # may be the last write
    notices.update(dataclasses.replace(status, recording_stopped=recording_stopped))
    control_lines.flush(force=True)
    print(_summary(status, written), file=sys.stderr)
    print(_counts(controller, notices.most_link_peers), file=sys.stderr)
    if settings.audio.out and written is None:
        print(f"expotion-live run: no music was played, so {settings.audio.out} was not written", file=sys.stderr)
    if not ok:
        return _fail(f"generation failed: {status.error}")
    return 1 if recording_stopped else 0


class CodeLog:
    """Which code was generated under which video frame, and when each was heard (`--codes-out`).

    Every time is on the take's clock: 0 is the first frame captured (for a video file, the
    file's first frame, so a time is seconds into the video). Kept as the generator thread
    renders; what was heard is read from the session's chunk marks when it has stopped.
    With `--tracking-out`, the tracked frames too (`features.recording`, times from the first
    tracked frame, which the codes file places on the take's clock as `tracking_start`).
    """

    def __init__(self, tracking: bool = False):
        self._codes: list[np.ndarray] = []          # (K, n) per chunk
        self._frame_times: list[np.ndarray] = []    # (n,) per chunk, session clock
        self._chunks: list[np.ndarray] = []         # (n,) per chunk
        from ..features.recording import TrackingRecorder

        self.tracking = TrackingRecorder() if tracking else None
        self._first_tracked: float | None = None

    def recording(self, build_source):
        """`build_source` whose MusicGen source logs each chunk it renders here."""
        def build(settings):
            source = build_source(settings)
            if not hasattr(source, "last_frame_times"):
                raise SessionError(f"--codes-out needs MusicGen (--engine musicgen); {source.name} makes no codes")
            render = source.render

            def render_logged(request):
                audio = render(request)
                self._codes.append(source.last_codes[0].numpy().copy())
                self._frame_times.append(np.array(source.last_frame_times, np.float64))
                self._chunks.append(np.full(request.n_frames, request.index, np.int64))
                return audio

            source.render = render_logged
            return source

        return build

    def on_frame(self, frame, image=None) -> None:
        """A frame listener: the first tracked frame's time, and every frame with --tracking-out."""
        if self._first_tracked is None:
            self._first_tracked = frame.t
        if self.tracking is not None:
            self.tracking(frame)

    def save(self, path, session, tracking_path=None) -> None:
        """codes (K, frames); frame_times and chunk (frames,); per chunk: heard (when its first code frame
        was played, NaN if never), heard_sample (where it is in --out) and latency (the control latency the
        run reported for it); audio_start (when --out's first sample was played) and tracking_start;
        written atomically."""
        from ..atomic import atomic_path

        origin = session.capture.first_frame_time if session.capture is not None else None
        if origin is None:
            origin = self._first_tracked or 0.0
        chunks = int(self._chunks[-1][-1]) + 1 if self._chunks else 0
        heard, latency, heard_sample = (np.full(chunks, np.nan) for _ in range(3))
        audio_start = np.nan
        for mark in session.scheduler.marks:
            if mark.index < chunks and mark.played_at > 0:
                heard[mark.index] = mark.played_at - origin
                latency[mark.index] = mark.played_at - mark.t_condition
                heard_sample[mark.index] = mark.first_frame_pos + session.player.preroll_samples
                if mark.index == 0:   # ring position p is --out's sample p + the silence before the first chunk
                    audio_start = (mark.played_at - heard_sample[0] / session.settings.audio.sample_rate - origin)
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, codes=np.concatenate(self._codes, axis=1) if self._codes else np.zeros((0, 0), np.int64),
                     frame_times=np.concatenate(self._frame_times) - origin if self._frame_times else np.zeros(0),
                     chunk=np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int64),
                     heard=heard, heard_sample=heard_sample, latency=latency, audio_start=np.float64(audio_start),
                     tracking_start=np.float64((self._first_tracked or origin) - origin))
        if tracking_path is not None and self.tracking is not None and len(self.tracking):
            self.tracking.save(tracking_path)


class RunNotices:
    """One line on stderr for each change the operator of a headless run must hear of at once:
    the recording stopped (a full disk), the audio device failed, the camera or video ended, failed, or stopped delivering,
    the number of Ableton Link peers changed."""

    def __init__(self, stall_seconds: float = STALL_SECONDS):
        self.stall_seconds = stall_seconds
        self._said: set[str] = set()
        self._status = "running"
        self._frames, self._frames_since = 0, time.monotonic()
        self._stalled = False
        self._link_peers = 0
        self.most_link_peers = 0

    def update(self, status: SessionStatus) -> None:
        if status.link is not None and status.link.peers != self._link_peers:
            self._link_peers = status.link.peers
            self.most_link_peers = max(self.most_link_peers, self._link_peers)
            print(f"expotion-live run: Ableton Link ({status.link.mode}): {self._link_peers} "
                  f"peer{'' if self._link_peers == 1 else 's'}, {status.link.tempo:.1f} BPM", file=sys.stderr)
        if status.recording_stopped:
            self._say(status.recording_stopped)
        if status.output_failure:
            self._say(status.output_failure)
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


class ControlLines:
    """One line on stderr per accepted control (OSC control port), at most one a second per control:
    a value held back prints, as the latest, once its second has passed (`flush`, from the status loop)."""

    def __init__(self, interval: float = CONTROL_LINE_SECONDS):
        self.interval = interval
        self._lock = threading.Lock()       # `accepted` runs on the control thread, `flush` on the main one
        self._printed: dict[str, float] = {}            # control -> when its last line printed
        self._held: dict[str, tuple[str, int]] = {}     # control -> (latest value, how many held back)

    def accepted(self, control: str, value: str) -> None:
        with self._lock:
            _, held = self._held.get(control, ("", 0))
            self._held[control] = (value, held + 1)
        self.flush()

    def flush(self, force: bool = False) -> None:
        now, lines = time.monotonic(), []
        with self._lock:
            for control, (value, held) in list(self._held.items()):
                if force or now - self._printed.get(control, -self.interval) >= self.interval:
                    more = f" (+{held - 1} more)" if held > 1 else ""
                    lines.append(f"expotion-live run: control {control}{' ' + value if value else ''}{more}")
                    self._printed[control] = now
                    del self._held[control]
        for line in lines:
            print(line, file=sys.stderr)


def _counts(controller: LiveController, most_link_peers: int) -> str:
    """What went in and out of the run besides the music."""
    control = controller.control.snapshot() if controller.control is not None else {}
    received = sum(control.values())
    refused = received - control.get("handled", 0)
    midi = "off" if controller.midi is None else f"{controller.midi.messages_sent} messages"
    link = "off" if controller.ableton_link is None else f"{most_link_peers} peer{'' if most_link_peers == 1 else 's'} at most"
    return (f"controls {controller.controls_accepted} accepted; OSC {controller.sender.bundles_sent} bundles out, "
            f"{received} control packets in ({refused} refused); MIDI {midi}; Ableton Link {link}")


def _summary(status: SessionStatus, written: Path | None) -> str:
    def seconds(value):
        return "-" if value is None else f"{value:.2f} s"

    rtf = "-" if status.sustained_rtf is None else f"{status.sustained_rtf:.2f}"
    return (f"played {status.played_seconds:.1f} s{f' -> {written}' if written else ''}; RTF {rtf}, "
            f"first sound {seconds(status.time_to_first_sound)}, control latency {seconds(status.control_latency_mean)} "
            f"mean, {seconds(status.control_latency_max)} max, "
            f"DSP latency {seconds(status.dsp_latency)}, underruns {status.underruns} "
            f"({status.dropped_seconds:.2f} s of silence), stalls {status.stalls} ({status.stalled_seconds:.1f} s), "
            f"stretched {status.stretched_seconds:.1f} s, tracking {status.tracking_rate:.0f} fps over the run")

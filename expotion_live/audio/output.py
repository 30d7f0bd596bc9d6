"""Where the ring's audio goes: a sounddevice stream, a file sink, or both.

Every consumer runs the same `BlockPlayer.fill` on each block: copy from the ring,
apply the fast DSP path, stamp the first sound, and hand the block to a recorder tap.
So the WAV written by `--out` holds exactly the blocks that were played.

- `AudioStream`: a PortAudio output stream chosen by device name. Its callback runs
  `fill` and nothing else: no allocation of buffers, no locks, no logging, no torch.
  The recording tap inside it is a second ring drained by a writer thread, because
  file I/O must never happen in the callback.
- `FileSink`: no sound card. A thread consumes the ring block by block, either paced by
  the wall clock (a stand-in for a real device: RTF and underruns are judged against it)
  or offline, as fast as the generator allows (it waits for each block, so never underruns).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..atomic import AtomicFile, disk_full, writing
from .dsp import DspPath
from .monitor import AudioMonitor
from .resample import ResampledFeed
from .ring_buffer import RingBuffer
from .watchdog import ABANDONED, STALL_SECONDS, Supervised


class AudioDeviceError(RuntimeError):
    """No usable output device (PortAudio missing, no device, or no device matching a name)."""


class BlockPlayer:
    """The body of the audio callback, shared by every consumer of the ring."""

    def __init__(self, ring: RingBuffer, dsp: DspPath):
        self.ring = ring
        self.dsp = dsp
        self.tap: WavRecorder | None = None   # set before starting; receives every played block
        self.monitor: AudioMonitor | None = None   # set before starting; the stage view's copy of what is played
        self.start_samples = 0                 # set before starting: see `fill`
        self.blocks_played = 0
        self.preroll_samples = 0               # silence played before the ring's first sample: ring pos p plays at p + this
        self.first_sound_time = 0.0            # time.monotonic() of the first non-silent block, 0 = not yet

    def fill(self, out: np.ndarray) -> None:
        """Fill `out` (1-D float32 view of the device buffer) completely. Callback-safe.

        Playback starts only once the ring holds `start_samples`: a device pre-fills its
        whole buffer in one burst when it starts, and a first chunk shorter than that
        burst would be followed by a gap.
        """
        if self.ring.read_index == 0 and self.ring.available() < self.start_samples:
            out.fill(0.0)
        else:
            self.ring.read_into(out)
        if self.ring.read_index == 0:
            self.preroll_samples += out.shape[0]
        peak = self.dsp.process(out)
        if self.first_sound_time == 0.0 and peak > 1e-4:
            self.first_sound_time = time.monotonic()
        if self.tap is not None:
            self.tap.push(out)
        if self.monitor is not None:
            self.monitor.push(out, peak)
        self.blocks_played += 1


class WavRecorder:
    """A WAV file written atomically: a temporary file beside the target, renamed on `close`.

    `push` is callback-safe (it only copies into a ring); a writer thread does the I/O.
    A write that fails (a full disk) stops the recording, not the show: what was written
    stays a valid WAV file, `stopped` says why, and `close` still puts it in place.
    """

    def __init__(self, path: str | Path, sample_rate: int, buffer_seconds: float = 4.0,
                 max_samples: int | None = None):
        import soundfile as sf

        self.path = Path(path)
        self.sample_rate = sample_rate
        self._target = AtomicFile(self.path)
        try:
            with writing(self.path):
                self._file = sf.SoundFile(self._target.tmp, "w", samplerate=sample_rate, channels=1,
                                          subtype="FLOAT")
        except BaseException:
            self._target.abort()     # no stray temporary file
            raise
        self._ring = RingBuffer(int(buffer_seconds * sample_rate))
        self._chunk = np.zeros(self._ring.capacity, np.float32)
        self.max_samples = max_samples   # stop recording after this many samples (an exact --duration)
        self._pushed = 0
        self.dropped_samples = 0     # samples the writer could not keep up with (should stay 0)
        self.stopped = ""            # why recording stopped early ("" = still recording); set by the writer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="wav-writer", daemon=True)
        self._thread.start()

    def push(self, block: np.ndarray) -> None:
        """Queue a played block for writing (callback-safe)."""
        n = block.shape[0]
        if self.max_samples is not None:
            n = min(n, self.max_samples - self._pushed)
        if n <= 0 or self.stopped:
            return
        written = self._ring.write(block[:n])
        self._pushed += written
        if written < n:
            self.dropped_samples += n - written

    def _drain(self) -> None:
        n = self._ring.available()
        if n and not self.stopped:
            view = self._chunk[:n]
            self._ring.read_into(view)
            try:
                self._file.write(view)
            except Exception as err:     # the show goes on; the file keeps what was written
                cause = "disk full" if disk_full(err, self.path) else f"cannot write ({err})"
                self.stopped = (f"{cause}: recording stopped at {self._file.frames / self.sample_rate:.1f} s, "
                                f"kept in {self.path}")

    def _drain_loop(self) -> None:
        while not self._stop.wait(0.05) and not self.stopped:
            self._drain()

    def close(self) -> Path:
        """Write what is left and rename the file into place."""
        self._stop.set()
        self._thread.join()
        self._drain()
        try:
            with writing(self.path):
                self._file.close()
        except BaseException:
            self._target.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Drop the temporary file (an error happened): the target path is left untouched."""
        self._stop.set()
        self._thread.join()
        self._file.close()
        self._target.abort()


def _portaudio():
    """Import sounddevice, turning a missing PortAudio into an actionable message."""
    try:
        import sounddevice
    except OSError as err:
        raise AudioDeviceError(
            f"PortAudio is not available ({err}); install it with: apt-get install libportaudio2") from None
    return sounddevice


def output_devices() -> list[tuple[int, str]]:
    """(index, name) of every device with output channels."""
    sd = _portaudio()
    return [(d["index"], d["name"]) for d in sd.query_devices() if d["max_output_channels"] > 0]


def find_output_device(name: str) -> int:
    """Device index whose name contains `name` (case-insensitive); "" = the system default.

    Raises AudioDeviceError listing the available devices when nothing matches.
    """
    sd = _portaudio()
    devices = output_devices()
    if not devices:
        raise AudioDeviceError("no audio output device found (no sound card, and no PulseAudio/ALSA device)")
    if not name:
        default = sd.default.device[1]
        return default if default is not None and default >= 0 else devices[0][0]
    matches = [(i, n) for i, n in devices if name.lower() in n.lower()]
    exact = [(i, n) for i, n in matches if n.lower() == name.lower()]
    if exact or matches:
        return (exact or matches)[0][0]
    listing = "; ".join(f"{i}: {n}" for i, n in devices)
    raise AudioDeviceError(f"no output device matches {name!r}; available: {listing}")


class AudioStream:
    """A mono float32 PortAudio output stream at the device's rate.

    At the music's rate the callback runs `BlockPlayer.fill` itself; at any other rate
    (chosen here, once) it copies from a `ResampledFeed`, which resamples on its own thread.
    `device_rate` 0 = the music's rate when the device takes it, else the device's default.
    """

    def __init__(self, player: BlockPlayer, device: str, sample_rate: int, block_size: int,
                 latency: float = 0.0, device_rate: int = 0):
        sd = _portaudio()
        self.player = player
        self.device_index = find_output_device(device)
        self.device_name = sd.query_devices(self.device_index)["name"]
        self.underflows = 0           # PortAudio reported output_underflow (the device ran dry)
        self.callbacks = 0            # callbacks so far: the watchdog's sign of life
        self.error = ""               # PortAudio says nothing when its server dies: the watchdog counts callbacks
        self._attached = True         # False once detached: the callback no longer touches the player
        self._in_fill = False
        self._latency = latency or "low"
        try:
            self._open(sd, device_rate or sample_rate, sample_rate, block_size)
        except sd.PortAudioError as err:
            own = int(sd.query_devices(self.device_index)["default_samplerate"])
            if device_rate or own == sample_rate:
                raise AudioDeviceError(f"cannot open output device {self.device_name!r} at "
                                       f"{device_rate or sample_rate} Hz: {err}") from None
            try:                      # the music's rate refused (a JACK server, a 48 kHz-only card): the device's own
                self._open(sd, own, sample_rate, block_size)
            except sd.PortAudioError as err:
                raise AudioDeviceError(f"cannot open output device {self.device_name!r} at {own} Hz: {err}") from None

    def _open(self, sd, rate: int, sample_rate: int, block_size: int) -> None:
        self.sample_rate = rate
        if rate == sample_rate:
            self.feed, self._fill, device_block = None, self.player.fill, block_size
        else:
            device_block = round(block_size * rate / sample_rate)
            self.feed = ResampledFeed(self.player, block_size, sample_rate, rate,
                                      lead_seconds=3 * device_block / rate)
            self._fill = self.feed.fill
        self._stream = sd.OutputStream(samplerate=rate, blocksize=device_block, device=self.device_index,
                                       channels=1, dtype="float32", callback=self._callback, latency=self._latency)

    def _callback(self, outdata, frames, time_info, status) -> None:
        self.callbacks += 1
        if status.output_underflow:
            self.underflows += 1
        self._in_fill = True          # before the check: see `detach`
        if self._attached:
            self._fill(outdata[:, 0])
        else:
            outdata.fill(0.0)
        self._in_fill = False

    @property
    def latency_seconds(self) -> float:
        """Audio buffered after the player: PortAudio's output latency, plus the resampler's lead."""
        return float(self._stream.latency) + (self.feed.lead_seconds if self.feed else 0.0)

    @property
    def dropped_samples(self) -> int:
        """Silence played because the resampler fell behind, in the music's samples."""
        return 0 if self.feed is None else round(self.feed.dropped_samples * self.feed.source_rate / self.sample_rate)

    def start(self) -> None:
        if self.feed is not None:
            self.feed.start()
        self._stream.start()

    def detach(self) -> None:
        """Stop consuming the player, without touching PortAudio (its server may be gone)."""
        self._attached = False
        while self._in_fill:          # a block being filled finishes first
            time.sleep(0.001)
        if self.feed is not None:
            self.feed.stop()

    def abandon(self) -> None:
        """Detach from a device that failed, leaving PortAudio alone: stopping, closing or
        terminating it would block for good once its server is gone, even at exit. The
        stream is kept for the life of the process: PortAudio may still call its callback,
        which must not be freed under it."""
        import atexit

        self.detach()
        ABANDONED.append(self)
        atexit.unregister(_portaudio()._exit_handler)
        # a device that only stalled would go on calling back into Python forever: abort it off this
        # thread (where its server is gone the call blocks, and only that daemon thread waits)
        threading.Thread(target=self._stream.abort, name="audio-abort", daemon=True).start()

    def stop(self) -> None:
        self.detach()
        self._stream.stop()
        self._stream.close()


class FileSink:
    """Consumes the ring without a sound card: paced by the wall clock, or offline."""

    def __init__(self, player: BlockPlayer, sample_rate: int, block_size: int, *,
                 realtime: bool = True, duration: float | None = None):
        self.player = player
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.realtime = realtime
        self.max_blocks = None if duration is None else round(duration * sample_rate / block_size)
        self.underflows = 0           # same interface as AudioStream; a sink has no device to run dry
        self.dropped_samples = 0
        self.failure = ""
        self.stalls = 0               # times this thread woke STALL_SECONDS late (a stopped or starved process)
        self.stalled_seconds = 0.0
        self.latency_seconds = 0.0    # nothing is buffered after the player
        self.device_name = ""         # no sound card: the session names the file (or nothing) instead
        self.finished = threading.Event()   # set when `duration` has been played
        self._block = np.zeros(block_size, np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="file-sink", daemon=True)

    def _run(self) -> None:
        block_seconds = self.block_size / self.sample_rate
        next_time = time.monotonic()
        while not self._stop.is_set():
            if self.max_blocks is not None and self.player.blocks_played >= self.max_blocks:
                self.finished.set()
                return
            if self.realtime:
                delay = next_time - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif -delay >= STALL_SECONDS:   # no catch-up burst: the ring would run dry and the file get a hole
                    self.stalls += 1
                    self.stalled_seconds -= delay
                    next_time = time.monotonic()
                next_time += block_seconds
            else:
                while self.player.ring.available() < self.block_size and not self._stop.is_set():
                    time.sleep(0.001)   # offline: the generator sets the pace
                if self._stop.is_set():
                    return
            self.player.fill(self._block)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


OUTPUT_MODES = ("auto", "device", "file")


def open_device(player: BlockPlayer, audio) -> AudioStream:
    """The output [audio] names: a PortAudio device, or a JACK client connected to `jack_ports`."""
    if audio.api == "jack":
        from .jack_output import JackStream

        return JackStream(player, audio.jack_ports, audio.sample_rate, audio.block_size)
    return AudioStream(player, audio.device, audio.sample_rate, audio.block_size, audio.latency, audio.device_rate)


def probe_output(audio, seconds: float = 0.3) -> str:
    """Open the device [audio] names, play silence briefly and close it: what it really is.

    Raises AudioDeviceError when it cannot be opened or never calls back.
    """
    player = BlockPlayer(RingBuffer(audio.sample_rate), DspPath(audio.sample_rate, audio.block_size, enabled=False))
    device = open_device(player, audio)
    device.start()
    time.sleep(seconds)
    if not device.callbacks:
        device.abandon()
        raise AudioDeviceError(f"output device {device.device_name!r} opened but never asked for audio")
    device.stop()
    rate = device.sample_rate
    how = "" if rate == audio.sample_rate else f", resampled from {audio.sample_rate} Hz"
    return f"{device.device_name} at {rate} Hz{how}"


def open_output(player: BlockPlayer, audio, mode: str) -> tuple[Supervised | FileSink, str]:
    """Where played blocks go, for the live session and `record` alike ([audio] settings).

    "device": the sound card, or AudioDeviceError; "file": no sound card, a wall-clock FileSink;
    "auto": the sound card, else the file sink unless [audio] names a device. The string is
    why auto fell back to the file sink ("" when it did not). A device that fails while
    playing is replaced by the file sink (`Supervised`).
    """
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output must be one of {OUTPUT_MODES}, got {mode!r}")

    def file_sink() -> FileSink:
        return FileSink(player, audio.sample_rate, audio.block_size, realtime=True)

    reason = ""
    if mode != "file":
        try:
            device = open_device(player, audio)
        except AudioDeviceError as err:
            if mode == "device" or audio.device or audio.api != "portaudio":
                raise
            reason = str(err)
        else:
            then = f"writing {audio.out} goes on" if audio.out else "the music goes on unheard"
            return Supervised(device, file_sink, then), ""
    return file_sink(), reason

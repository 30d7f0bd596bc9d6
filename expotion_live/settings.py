"""Settings: built-in defaults, overridden by one TOML file, overridden by command-line flags.

Each section is a frozen dataclass; the TOML file uses the same section and key names
(`[generation] prompt = "..."`). Loading validates every key and type, every number's range
(`RANGES`), every word's allowed values (`CHOICES`) and the OSC targets, so a typo in a
settings file is a one-line error naming the key rather than a surprise on stage.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_path
from .features.schema import EXPRESSION_NAMES
from .outputs.osc.targets import MODES as OSC_MODES, OscTargetError, parse_target, parse_targets


class SettingsError(ValueError):
    """A settings file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class CameraSettings:
    source: str = "auto"          # "auto" (first camera, else the bundled demo video), an index, a name, or a video file
    width: int = 640              # capture size; tracking cost grows with it
    height: int = 480
    fps: float = 30.0             # requested camera rate; video files play at their own rate
    realtime: bool = True         # video files: play at their frame rate (False = as fast as possible)
    loop: bool = True             # video files: start again at the end (installations)
    mirror_preview: bool = True   # flip the preview only; features are never mirrored


@dataclass(frozen=True)
class TrackingSettings:
    min_cutoff: float = 1.0       # One-Euro: Hz, lower = smoother at rest (Casiez et al. 2012)
    beta: float = 0.5             # One-Euro: speed coefficient, higher = less lag on fast moves (0-1 signals move at 1-3 units/s)
    d_cutoff: float = 1.0         # One-Euro: Hz, cutoff of the derivative estimate
    flow_width: int = 320         # optical flow runs on a downscaled grey frame of this width
    timeline_seconds: float = 30.0  # how much 50 Hz feature history the timeline keeps
    hands: bool = True            # hand tracking and conductor gestures (beats, tempo); off saves the hand model's cost
    hand_model: str = "lite"      # lite | full: MediaPipe's hand landmark model (full: steadier left/right, costlier: bench vision)
    calibrate_at_start: bool = True  # the first frames with a face become the neutral face, as `prepare` does per take


@dataclass(frozen=True)
class ModelSettings:
    dir: str = "checkpoints/musicgen-small"  # MusicGen weights in the transformers layout
    adaptor: str = ""             # adaptor checkpoint directory; "" = none
    precision: str = "auto"       # auto | fp32 | bf16 | int8 | int4
    device: str = "auto"          # auto | cpu | cuda | mps
    threads: int = 1              # torch CPU threads for generation: tracking needs another core, and threads
                                  # that share busy cores wait on each other every step (bench decode --threads)


@dataclass(frozen=True)
class GenerationSettings:
    prompt: str = "warm electronic groove with soft pads"
    cfg: float = 3.0              # classifier-free guidance on the text (1 = off)
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0            # 0 = off
    seed: int = -1                # -1 = a fresh seed per run
    chunk_seconds: float = 0.5    # audio produced per generator step: shorter follows the performer sooner (bench/live.py)
    context_seconds: float = 4.0  # recent codes prefilled when the stream slides (its window is full)
    window_seconds: float = 10.0  # the streamed KV cache's length: longer slides less often, attends over more
    crossfade_ms: float = 40.0    # equal-power crossfade at chunk joins
    first_chunk_seconds: float = 0.5  # a shorter first chunk: time to first sound is one render of it
    decode_context_seconds: float = 0.2  # codes re-decoded before each chunk so its start matches the last chunk's end (join mismatch stops improving past 10 frames)
    steer_prompt: bool = True     # add words from tracked tempo/expression when no adaptor is loaded


@dataclass(frozen=True)
class AudioSettings:
    device: str = ""              # output device name (substring match); "" = system default
    api: str = "portaudio"        # "portaudio": the device above; "jack": a JACK client playing into jack_ports
    jack_ports: tuple[str, ...] = ()  # JACK input ports to play into, e.g. ["system:playback_1"]; () = the physical ones
    sample_rate: int = 32000      # EnCodec's rate: the music, the DSP and the recording run at it
    device_rate: int = 0          # the device's rate (resampled with soxr); 0 = the music's if the device takes it, else the device's own
    block_size: int = 512         # frames per callback: DSP latency is one block
    buffer_seconds: float = 8.0   # ring buffer capacity between generator and callback
    latency: float = 0.0          # PortAudio output latency hint, seconds; 0 = the device's low default (raise it on a busy machine)
    out: str = ""                 # also record exactly what is played to this WAV file
    dsp: bool = True              # fast control path: gain from motion energy, low-pass from an expression
    min_gain: float = 0.35        # gain when perfectly still (about -9 dB): motion makes it louder
    filter_expression: str = "mouth_height"  # expression scalar that opens the low-pass (see EXPRESSION_NAMES)
    filter_min_hz: float = 1000.0  # low-pass cutoff at expression 0 (exponential sweep to the max)
    filter_max_hz: float = 16000.0  # low-pass cutoff at expression 1: effectively open
    dsp_smoothing_ms: float = 10.0  # glide of gain and cutoff: no zipper noise, well under one video frame


@dataclass(frozen=True)
class OscSettings:
    targets: tuple[str, ...] = ("127.0.0.1:9000",)  # [MODE@]HOST[:PORT] destinations for tracking and music state (docs/osc.md)
    mode: str = "native"          # native | faceosc | wekinator: the schema of targets that name none
    control_port: int = 9001      # listens here for remote control; 0 = off
    control_host: str = "127.0.0.1"  # address the control port binds; "0.0.0.0" lets phones/other machines in
    control_secret: str = ""      # first argument of every control message when control_host is not loopback (docs/osc.md)
    presets_all_sections: bool = False  # presets may set devices, files and ports too, not only [generation]
    ableton: str = ""             # AbletonOSC HOST:PORT for tempo/transport; "" = off


# MIDI CC map (docs/midi.md): SIGNAL:CC for 7 bits, SIGNAL:CC/14 for 14 bits (CC and CC+32, CC < 32).
# CCs 20-31 and 85 are undefined in the MIDI spec, so no synth reacts before the DAW maps them.
MIDI_MAP = ("mouth_height:20", "mouth_width:21", "smile:22", "brow_left:23", "brow_right:24", "eye_left:25",
            "eye_right:26", "jaw:27", "yaw:28", "pitch:29", "roll:30", "motion_energy:31", "face_found:85")


@dataclass(frozen=True)
class MidiSettings:
    enabled: bool = False         # MIDI out (mido + python-rtmidi): what DAWs map natively, unlike OSC
    port: str = "Expotion Live"   # the virtual port's name, or (virtual = false) part of an existing output port's
    virtual: bool = True          # create the port (Linux, macOS); false = open an existing one (Windows: loopMIDI)
    channel: int = 1              # MIDI channel 1-16 of every message
    map: tuple[str, ...] = MIDI_MAP  # which signal drives which controller
    rate_hz: float = 50.0         # most updates per second of one controller: a DAW's automation needs no more
    note: int = 0                 # note played when the mouth opens (velocity: how wide); 0 = no notes
    clock: bool = False           # MIDI clock (24 per beat) at the music's tempo, start/stop with the music
    api: str = "auto"             # auto (the system's own: ALSA, CoreMIDI, Windows MM) | alsa | jack | coremidi | winmm


@dataclass(frozen=True)
class LinkSettings:
    mode: str = "off"             # off | follow (the music takes the Link session's tempo and beat) | conduct (the performer's tempo leads it)
    quantum: float = 4.0          # beats per bar: Link aligns phase over this many beats
    conduct_change_bpm: float = 2.0   # conduct: the tracked tempo must differ from the session's by this much...
    conduct_hold_seconds: float = 2.0  # ...and hold there this long before the band is moved (a pause never drags it)


@dataclass(frozen=True)
class EngineSettings:
    kind: str = "auto"            # auto (MusicGen if weights exist, else synth) | musicgen | synth
    headless: bool = False        # no window: installations and CI
    min_lead_seconds: float = 0.2  # least audio kept buffered ahead of the playhead (the rest adapts to render time)
    low_water_seconds: float = 0.08  # below this, while a chunk still renders, the last chunk is looped instead of silence
    loop_seconds: float = 0.5     # longest replayed stretch when generation is behind (shorter when the chunk is nearly done)


@dataclass(frozen=True)
class Settings:
    camera: CameraSettings = field(default_factory=CameraSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    osc: OscSettings = field(default_factory=OscSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    midi: MidiSettings = field(default_factory=MidiSettings)
    link: LinkSettings = field(default_factory=LinkSettings)


# The range of every number, checked on load and for the flags that set them: a value outside
# is refused naming the key, instead of hanging the stream (block_size 0), overflowing a socket
# call (control_port 70000) or asking for terabytes (context_seconds 1e9).
RANGES: dict[str, tuple[float, float]] = {
    "camera.width": (16, 7680), "camera.height": (16, 4320), "camera.fps": (1, 240),
    "tracking.min_cutoff": (0.001, 100), "tracking.beta": (0, 100), "tracking.d_cutoff": (0.001, 100),
    "tracking.flow_width": (32, 3840), "tracking.timeline_seconds": (1, 600),
    "model.threads": (1, 256),
    "generation.cfg": (0.0, 20.0), "generation.temperature": (0.01, 5.0), "generation.top_k": (0, 2048),
    "generation.top_p": (0, 1), "generation.seed": (-1, 2**32 - 1), "generation.chunk_seconds": (0.02, 10),
    "generation.context_seconds": (0, 30), "generation.window_seconds": (2, 40), "generation.crossfade_ms": (0, 1000),
    "generation.first_chunk_seconds": (0.02, 10), "generation.decode_context_seconds": (0, 5),
    "audio.sample_rate": (8000, 192000), "audio.device_rate": (0, 384000), "audio.block_size": (16, 16384), "audio.buffer_seconds": (1, 600),
    "audio.latency": (0, 2), "audio.min_gain": (0, 1), "audio.filter_min_hz": (20, 96000),
    "audio.filter_max_hz": (20, 96000), "audio.dsp_smoothing_ms": (0, 1000),
    "osc.control_port": (0, 65535),
    "midi.channel": (1, 16), "midi.rate_hz": (1, 1000), "midi.note": (0, 127),
    "link.quantum": (1, 16), "link.conduct_change_bpm": (0.5, 60), "link.conduct_hold_seconds": (0, 60),
    "engine.min_lead_seconds": (0, 60), "engine.low_water_seconds": (0, 60), "engine.loop_seconds": (0.02, 10),
}


# The allowed words of every setting that takes one of a few, checked on load like RANGES; the
# flags, the window's pickers and doctor list them from here. A component given another word
# would fail only when it starts (a precision, a hand model), or quietly do nothing (a Link mode).
CHOICES: dict[str, tuple[str, ...]] = {
    "tracking.hand_model": ("lite", "full"),
    "model.precision": ("auto", "fp32", "bf16", "int8", "int4"),
    "model.device": ("auto", "cpu", "cuda", "mps"),
    "audio.api": ("portaudio", "jack"),
    "audio.filter_expression": EXPRESSION_NAMES,
    "osc.mode": OSC_MODES,
    "engine.kind": ("auto", "musicgen", "synth"),
    "midi.api": ("auto", "alsa", "jack", "coremidi", "winmm"),
    "link.mode": ("off", "follow", "conduct"),
}
# Words that may also carry an index, as torch spells it: "cuda:1" is the second GPU.
INDEXED_CHOICES: dict[str, tuple[str, ...]] = {"model.device": ("cuda",)}


def is_choice(key: str, value: str) -> bool:
    """`value` is one of CHOICES[key], or WORD:N for a word of INDEXED_CHOICES[key]."""
    word, colon, index = value.partition(":")
    return value in CHOICES[key] or bool(colon) and word in INDEXED_CHOICES.get(key, ()) and index.isdigit()


def choices_text(key: str) -> str:
    """The allowed values of `key`, as errors and help texts list them."""
    return ", ".join((*CHOICES[key], *(f"{word}:N" for word in INDEXED_CHOICES.get(key, ()))))


def in_range(value, low: float, high: float) -> bool:
    """A finite number in [low, high] (NaN and infinities never are)."""
    return math.isfinite(value) and low <= value <= high


def _coerce(key: str, value, annotation):
    """Check one value against its field type; ints are accepted where floats are expected."""
    hint = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is tuple:
        (item_type, _) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, item_type) for v in value):
            raise SettingsError(f"{key}: expected a list of {item_type.__name__}, got {value!r}")
        return tuple(value)
    if isinstance(annotation, type) and isinstance(value, annotation) and not (
            annotation is not bool and isinstance(value, bool)):
        return value
    name = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    raise SettingsError(f"{key}: expected {name}, got {type(value).__name__} {value!r}")


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise SettingsError(f"unknown setting {prefix + '.' if prefix else ''}{unknown[0]} "
                            f"in {where}; known keys: {', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise SettingsError(f"{key}: expected a [{key}] table, got {value!r}")
            values[name] = _build(annotation, value, key)
        else:
            values[name] = _coerce(key, value, annotation)
            if key in RANGES and not in_range(values[name], *RANGES[key]):
                low, high = RANGES[key]
                raise SettingsError(f"{key} = {value!r} is outside {low:g} to {high:g}")
            if key in CHOICES and not is_choice(key, values[name]):
                raise SettingsError(f"{key} = {value!r}: choose one of {choices_text(key)}")
    return dataclasses.replace(cls(), **values) if values else cls()


def _check_addresses(settings: Settings) -> None:
    """The OSC targets' and AbletonOSC's form ([MODE@]HOST[:PORT]; whether a host resolves is the
    network's state, asked when sending starts, not a property of the file) and the MIDI map's entries."""
    from .outputs.midi import MidiError, parse_map    # outputs.midi reads MidiSettings from here

    osc = settings.osc
    for key, check in (("osc.targets", lambda: parse_targets(osc.targets, osc.mode, resolve=False)),
                       ("osc.ableton", lambda: osc.ableton and parse_target(osc.ableton, resolve=False)),
                       ("midi.map", lambda: parse_map(settings.midi.map))):
        try:
            check()
        except (OscTargetError, MidiError) as err:
            raise SettingsError(f"{key}: {err}") from None


def from_dict(data: dict) -> Settings:
    """Validate a nested dict (as parsed from TOML) into Settings."""
    settings = _build(Settings, data, "")
    _check_addresses(settings)
    return settings


def load(path: str | os.PathLike | None) -> Settings:
    """Defaults, overridden by the TOML file at `path` (if given)."""
    if path is None:
        return Settings()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except IsADirectoryError:
        raise SettingsError(f"settings file {path} is a folder; pass a TOML file") from None
    except OSError as err:
        raise SettingsError(f"settings file {path} cannot be read: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"settings file {path} is not valid TOML: {err}") from None
    try:
        return from_dict(data)
    except SettingsError as err:
        raise SettingsError(f"{path}: {err}") from None


def override(settings: Settings, dotted: dict[str, object]) -> Settings:
    """Apply `{"generation.prompt": "...", ...}` (command-line flags) with the same validation."""
    nested: dict = to_dict(settings)
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        if section not in nested or not name:
            raise SettingsError(f"unknown setting {key}")
        nested[section][name] = list(value) if isinstance(value, tuple) else value
    return from_dict(nested)


def to_dict(settings: Settings) -> dict:
    return {
        section.name: {k: list(v) if isinstance(v, tuple) else v
                       for k, v in dataclasses.asdict(getattr(settings, section.name)).items()}
        for section in dataclasses.fields(settings)
    }


def save(settings: Settings, path: str | os.PathLike) -> None:
    """Write the settings as TOML atomically (a crash never leaves half a file)."""
    import tomli_w

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(tomli_w.dumps(to_dict(settings)), encoding="utf-8")


def value_of(settings: Settings, key: str):
    """The value of dotted `key` ("generation.prompt") in `settings`."""
    section, _, name = key.partition(".")
    return getattr(getattr(settings, section), name)


def save_changes(path: str | os.PathLike, changes: dict[str, object]) -> None:
    """Write `{"generation.prompt": ..., ...}` into the TOML file at `path`, atomically, changing nothing else.

    The performer's file keeps its comments, its order and every key not named in
    `changes` (also keys a newer version of the program knows); a missing file is made.
    """
    import tomlkit

    path = Path(path)
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if section not in document:
            document[section] = tomlkit.table()
        document[section][name] = list(value) if isinstance(value, tuple) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(tomlkit.dumps(document), encoding="utf-8")


def default_path() -> Path:
    """Where the app keeps the performer's settings between runs (XDG config dir)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "expotion-live" / "settings.toml"

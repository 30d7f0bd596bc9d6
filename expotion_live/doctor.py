"""`expotion-live doctor`: the check a performer runs before a show.

Every line says OK or what to do. A check is *needed for a show* when the show cannot
go on without it (a camera, an audio output, the trackers, the control port); the rest
is information. `--strict` turns a missing show need into a non-zero exit, so an
installation's start script can refuse to start a broken rig.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from .model.download import has_weights
from .settings import Settings, choices_text

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str               # what was found
    fix: str = ""             # what to do when not ok
    needed_for_show: bool = False


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check_versions() -> list[Check]:
    found = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "mediapipe", "opencv-contrib-python", "numpy", "PyQt6",
                 "sounddevice", "python-osc"):
        found[dist] = _version(dist)
    try:
        from PyQt6.QtCore import QT_VERSION_STR
        found["Qt"] = QT_VERSION_STR
    except ImportError:
        pass
    missing = [name for name, v in found.items() if v == "not installed"]
    return [Check("versions", not missing, ", ".join(f"{k} {v}" for k, v in found.items()),
                  fix=f"reinstall the project: bash scripts/install ({', '.join(missing)} missing)" if missing else "",
                  needed_for_show=True)]


def check_cameras(settings: Settings) -> list[Check]:
    """Open every camera for real and read a frame: a listed camera may still be busy or denied."""
    from .capture.sources import CameraSource, CaptureError, list_cameras

    cameras = list_cameras()
    if not cameras:
        return [Check("camera", False, "no camera connected",
                      fix="plug in a webcam; without one the app plays the bundled demo video",
                      needed_for_show=True)]
    opened, failed = [], []
    for info in cameras:
        try:
            CameraSource(info.index, settings.camera.width, settings.camera.height, settings.camera.fps,
                         name=info.name).close()
            opened.append(f"{info.index}: {info.name}")
        except CaptureError as err:
            failed.append(str(err))
    if not opened:
        return [Check("camera", False, "; ".join(failed), fix="close other programs using the camera",
                      needed_for_show=True)]
    return [Check("camera", True, "; ".join(opened + [f"(not usable: {f})" for f in failed]), needed_for_show=True)]


def check_audio(settings: Settings) -> list[Check]:
    """The output devices as the session finds them, the default marked, and the one a show would
    use opened and played for a moment: a listed device may still refuse (a rate, a busy card)."""
    try:
        import sounddevice as sd
    except OSError:
        return [Check("audio output", False, "PortAudio library not found",
                      fix="install PortAudio: sudo apt-get install libportaudio2", needed_for_show=True)]
    from .audio.output import AudioDeviceError, find_output_device, output_devices, probe_output

    try:
        outputs = output_devices()
        default_out = find_output_device("") if outputs else None
    except sd.PortAudioError as err:
        return [Check("audio output", False, f"PortAudio error: {err}",
                      fix="check the sound server (PulseAudio/PipeWire/JACK) is running", needed_for_show=True)]
    if not outputs:
        return [Check("audio output", False, "no output device",
                      fix="connect an audio interface or start the sound server; "
                          "meanwhile record to a file with --out show.wav", needed_for_show=True)]
    names = "; ".join(f"{name}{' (default)' if i == default_out else ''}" for i, name in outputs)
    wanted = settings.audio.device
    try:
        find_output_device(wanted)
    except AudioDeviceError:
        return [Check("audio output", False, f"no device matches audio.device={wanted!r}; have: {names}",
                      fix="set audio.device to part of one of these names", needed_for_show=True)]
    try:
        opened = probe_output(settings.audio)
    except AudioDeviceError as err:
        return [Check("audio output", False, f"{err}; have: {names}",
                      fix="pick another device (audio.device, --audio-output) or record with --out show.wav",
                      needed_for_show=True)]
    return [Check("audio output", True, f"plays: {opened}; have: {names}", needed_for_show=True)]


def check_accelerator() -> list[Check]:
    import torch

    if torch.cuda.is_available():
        return [Check("accelerator", True, f"CUDA: {torch.cuda.get_device_name(0)}")]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return [Check("accelerator", True, "Apple MPS")]
    return [Check("accelerator", False, "CPU only (no CUDA or MPS)",
                  fix="fine for the synth; MusicGen small at int8 plays but below real time on a small CPU "
                      "(the engine loops to cover it); a CUDA GPU makes MusicGen small to large live")]


def check_decode_backend(settings: Settings) -> list[Check]:
    """Which decoding step MusicGen will run here (model.device, model.precision): information only."""
    from .model.generate import decode_backend_name

    model = settings.model
    try:
        name = decode_backend_name(model.device, model.precision)
    except ValueError as err:
        return [Check("decode backend", False, str(err),
                      fix=f"set model.device ({choices_text('model.device')}) and model.precision "
                          f"({choices_text('model.precision')}) to ones this machine has",
                      needed_for_show=settings.engine.kind == "musicgen")]
    return [Check("decode backend", True,
                  f"{name} (model.device = {model.device}, model.precision = {model.precision})")]


def _is_musicgen_dir(path: Path) -> bool:
    """Weights in the loader's layout, and MusicGen's (other models may share checkpoints/)."""
    if not has_weights(path):
        return False
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "musicgen"
    except (OSError, ValueError):
        return False


def check_weights(settings: Settings, checkpoints: Path) -> list[Check]:
    model_dirs = sorted(p for p in checkpoints.glob("*") if p.is_dir() and _is_musicgen_dir(p))
    configured = Path(settings.model.dir)
    needed = settings.engine.kind == "musicgen"
    checks = []
    if model_dirs:
        checks.append(Check("MusicGen weights", True, ", ".join(str(p) for p in model_dirs), needed_for_show=needed))
    else:
        checks.append(Check("MusicGen weights", False, f"none under {checkpoints}",
                            fix=f"run: expotion-live download small --dir {checkpoints} "
                                "(until then the built-in gesture synth plays)", needed_for_show=needed))
    if model_dirs and not _is_musicgen_dir(configured):
        checks.append(Check("model.dir", False, f"{configured} holds no MusicGen weights",
                            fix=f"set model.dir to one of: {', '.join(str(p) for p in model_dirs)}",
                            needed_for_show=needed))
    adaptors = sorted(p.parent for p in checkpoints.rglob("adaptor.json"))
    checks.append(Check("adaptor checkpoints", bool(adaptors),
                        ", ".join(str(p) for p in adaptors) if adaptors else f"none under {checkpoints}",
                        fix="" if adaptors else "train one on your recordings: expotion-live record / prepare / train "
                                                "(without one, tracked tempo and mood steer the text prompt)"))
    return checks


def check_trackers() -> list[Check]:
    from .features import landmarkers

    try:
        for make in (landmarkers.face_landmarker, landmarkers.pose_landmarker):
            make().close()
    except landmarkers.TrackerModelMissing as err:
        return [Check("trackers", False, str(err), fix=landmarkers.RESTORE, needed_for_show=True)]
    except Exception as err:  # any failure here means no tracking on stage
        return [Check("trackers", False, f"MediaPipe face/pose landmarkers failed to load: {err}",
                      fix="reinstall: bash scripts/install (it installs the MediaPipe release pyproject.toml names)",
                      needed_for_show=True)]
    return [Check("trackers", True, f"MediaPipe face (478 landmarks) and pose landmarkers load from "
                                    f"{landmarkers.MODELS_DIR}", needed_for_show=True)]


def check_osc_port(settings: Settings) -> list[Check]:
    port = settings.osc.control_port
    if port == 0:
        return [Check("OSC control port", True, "off (osc.control_port = 0)")]
    from .outputs.osc.control import is_loopback

    host = settings.osc.control_host
    if not is_loopback(host) and not settings.osc.control_secret:
        return [Check("OSC control port", False, f"control_host {host} is open to the network without a secret",
                      fix="set [osc] control_secret (docs/osc.md) or control_host = \"127.0.0.1\"",
                      needed_for_show=True)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((settings.osc.control_host, port))   # where the control server will bind
        except OSError as err:
            return [Check("OSC control port", False, f"UDP {settings.osc.control_host}:{port} cannot be bound: "
                                                     f"{err.strerror}",
                          fix="close the other program or set osc.control_port", needed_for_show=True)]
    return [Check("OSC control port", True, f"UDP {port} free; sending to {', '.join(settings.osc.targets)}",
                  needed_for_show=True)]


def check_midi(settings: Settings) -> list[Check]:
    """MIDI output ports by name; information only: the show goes on without MIDI."""
    from .outputs.midi import MidiError, list_ports, parse_map

    api = settings.midi.api
    state = f"{'on' if settings.midi.enabled else 'off (midi.enabled = false)'}, api = {api}"
    try:
        parse_map(settings.midi.map)
        ports = list_ports(api)
    except MidiError as err:
        return [Check("MIDI out", False, f"{state}; {err}", fix=_midi_fix(api))]
    if settings.midi.enabled and not settings.midi.virtual and not any(
            settings.midi.port.lower() in name.lower() for name in ports):
        return [Check("MIDI out", False, f"no output port matches midi.port={settings.midi.port!r}; "
                                         f"have: {', '.join(ports) or 'none'}",
                      fix="set midi.port to part of one of these names, or midi.virtual = true")]
    return [Check("MIDI out", True, f"{state}; output ports: {', '.join(ports) or 'none'}")]


def _midi_fix(api: str) -> str:
    """What to change when the chosen MIDI API has no backend: the other Linux API, if it works here."""
    from .outputs.midi import MidiError, list_ports

    other = {"auto": "jack", "alsa": "jack", "jack": "alsa"}.get(api)
    if other is not None:
        try:
            list_ports(other)
            return f'[midi] api = "{other}" works here; MIDI stays off until then, the show goes on'
        except MidiError:
            pass
    return "MIDI stays off, the show goes on (docs/midi.md: MIDI on Linux, ALSA or JACK)"


def check_link(settings: Settings) -> list[Check]:
    from .outputs.ableton_link import LinkError, binding

    try:
        binding()
    except LinkError as err:
        return [Check("Ableton Link", False, f"link.mode = {settings.link.mode}; {err}")]
    return [Check("Ableton Link", True, f"aalink {_version('aalink')} available; link.mode = {settings.link.mode}")]


def check_display() -> list[Check]:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return [Check("display", False, "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)",
                      fix="the window needs a desktop; headless mode runs anyway (expotion-live run --headless)")]
    return [Check("display", True, "available")]


def check_settings_file(config: str | None, error: str) -> list[Check]:
    """The settings file that was read, or what is wrong with it (the other checks then use the defaults)."""
    from .settings import default_path

    path = Path(config) if config else default_path()
    if error:
        return [Check("settings file", False, error, needed_for_show=True,
                      fix=f"correct what it names in {path} (the checks below use the built-in defaults)")]
    return [Check("settings file", True, str(path) if path.exists() else f"none ({path} does not exist): defaults")]


def check_demo_video() -> list[Check]:
    path = REPO / "assets" / "demo_face.mp4"
    return [Check("demo video", path.exists(), str(path),
                  fix="" if path.exists() else "regenerate it: python -m expotion_live.testing.face_video")]


def run_checks(settings: Settings, checkpoints: Path) -> list[Check]:
    return [
        *check_versions(), *check_cameras(settings), *check_audio(settings), *check_trackers(),
        *check_accelerator(), *check_decode_backend(settings), *check_weights(settings, checkpoints), *check_osc_port(settings),
        *check_midi(settings), *check_link(settings),
        *check_display(), *check_demo_video(),
    ]

"""Presets by name: small TOML files holding any subset of the settings.

`presets/NAME.toml` beside the settings file (or `./presets` without one). Loading a
preset overrides only the keys it holds and validates them like the settings file, so a
typo in a preset is an error naming the key, and the performance keeps its old values.
A preset can be asked for over the network (/expotion/preset), so it holds the music only
(`MUSICAL_SECTIONS`) unless the performer's settings allow more (`osc.presets_all_sections`),
and it is read from the presets folder only, never through a link out of it.
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from . import settings as settings_mod
from .atomic import atomic_path
from .settings import Settings, SettingsError

_NAME = re.compile(r"^[\w][\w .-]*$")
MUSICAL_SECTIONS = ("generation",)    # what "Save preset" keeps and a preset may set: the music, not devices


class PresetError(ValueError):
    """A preset that does not exist or cannot be used; the message says which and why."""


def presets_dir(settings_path: str | os.PathLike | None) -> Path:
    return (Path(settings_path).parent if settings_path else Path.cwd()) / "presets"


def _path(directory: Path, name: str) -> Path:
    if not _NAME.match(name) or name.strip() != name:
        raise PresetError(f"preset name {name!r} may hold letters, digits, spaces, '.', '-' and '_' only")
    return directory / f"{name}.toml"


def list_presets(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def apply_preset(settings: Settings, directory: Path, name: str) -> Settings:
    """`settings` with the preset's keys applied; raises PresetError and changes nothing on failure."""
    path = _path(directory, name)
    if path.exists() and not path.resolve().is_relative_to(directory.resolve()):
        raise PresetError(f"preset {path} links to {path.resolve()}, outside {directory}: presets are read from "
                          f"that folder only; copy the file there")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(list_presets(directory)) or "none yet"
        raise PresetError(f"no preset {name!r} in {directory} (known: {known})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PresetError(f"preset {path} is not valid TOML: {err}") from None
    dotted = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise PresetError(f"preset {path}: {section} must be a [{section}] table")
        if section not in MUSICAL_SECTIONS and not settings.osc.presets_all_sections:
            raise PresetError(f"preset {path} sets [{section}]: presets change {', '.join(MUSICAL_SECTIONS)} only, "
                              f"unless the settings file has [osc] presets_all_sections = true")
        dotted.update({f"{section}.{key}": value for key, value in values.items()})
    try:
        return settings_mod.override(settings, dotted)
    except SettingsError as err:
        raise PresetError(f"preset {path}: {err}") from None


def save_preset(settings: Settings, directory: Path, name: str) -> Path:
    """Write the current `MUSICAL_SECTIONS` as preset `name` (atomically, replacing an old one)."""
    import tomli_w

    path = _path(directory, name)
    everything = settings_mod.to_dict(settings)
    with atomic_path(path) as tmp:
        tmp.write_text(tomli_w.dumps({s: everything[s] for s in MUSICAL_SECTIONS}), encoding="utf-8")
    return path

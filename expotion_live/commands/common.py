"""What several subcommands share: argparse types from the settings' ranges, the model flags, one error line.

Each other module here is one subcommand (or a few that belong together): its parser and its
handler, which turns flags into settings overrides and calls the domain packages. No domain
package imports argparse.
"""
from __future__ import annotations

import argparse
import sys
import typing

from ..settings import CHOICES, RANGES, Settings, choices_text, in_range

# flag dest -> the setting it overrides: the model options `generate` and `run` share
MODEL_FLAGS = {"model": "model.dir", "adaptor": "model.adaptor", "prompt": "generation.prompt",
               "precision": "model.precision"}


def number(kind: type, low: float, high: float):
    """An argparse `type`: a finite `kind` in [low, high], else a one-line usage error with the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not in_range(value, low, high):
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g} to {high:g}")
        return value

    return parse


def flag(key: str):
    """The argparse `type` of a flag that overrides setting `key`: the setting's own type and range."""
    section, name = key.split(".")
    return number(typing.get_type_hints(typing.get_type_hints(Settings)[section])[name], *RANGES[key])


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --adaptor, --prompt, --precision: the same for `generate` and `run` (see MODEL_FLAGS)."""
    p.add_argument("--model", metavar="DIR", help="MusicGen weights directory (settings: model.dir)")
    p.add_argument("--adaptor", metavar="CKPT", help="trained condition adaptor (settings: model.adaptor)")
    p.add_argument("--prompt", metavar="TEXT", help="text prompt (settings: generation.prompt)")
    p.add_argument("--precision", choices=CHOICES["model.precision"],
                   help="decoder weights (settings: model.precision)")


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings overridden by the flags of `add_model_flags` that were given."""
    return {key: getattr(args, dest) for dest, key in MODEL_FLAGS.items() if getattr(args, dest) is not None}


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """--device: the compute device for MusicGen (the sound card is another flag where a command has one)."""
    p.add_argument("--device", help=f"compute device for MusicGen: {choices_text('model.device')} "
                                    f"(settings: model.device)")


def fail(message: str, command: str = "") -> int:
    """Print the one line that says what went wrong (and what to do); exit status 1."""
    print(f"expotion-live{' ' + command if command else ''}: {message}", file=sys.stderr)
    return 1

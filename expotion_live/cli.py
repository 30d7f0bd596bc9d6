"""The `expotion-live` command line; the one place where subcommands are wired.

Settings come from the built-in defaults, then the settings file (`--config FILE`, or
the one the app saved last time at `settings.default_path()`), then each subcommand's
flags. With no subcommand the live app starts (`run`).
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__, doctor, settings as settings_mod
from .features import commands as features_commands
from .train import record as record_commands
from .ui import commands as ui_commands
from .settings import SettingsError

SUBCOMMAND_MODULES = (doctor, features_commands, ui_commands, record_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expotion-live",
        description="Make music live with your face and body (Expotion on MusicGen). "
                    "With no subcommand, the live app starts.")
    parser.add_argument("--version", action="version", version=f"expotion-live {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help=f"TOML settings file (default: {settings_mod.default_path()} if it exists)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        module.add_parser(subparsers)
    return parser


def load_settings(config: str | None) -> settings_mod.Settings:
    if config is not None:
        return settings_mod.load(config)
    saved = settings_mod.default_path()
    return settings_mod.load(saved if saved.exists() else None)


def main(argv: list[str] | None = None) -> int:
    # MediaPipe's C++ logging would bury our messages; keep its warnings and errors only.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        settings = load_settings(args.config)
        return args.handler(args, settings)
    except SettingsError as err:
        print(f"expotion-live: settings error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

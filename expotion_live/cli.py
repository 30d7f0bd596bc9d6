"""The `expotion-live` command line; the one place where subcommands are wired.

Settings come from the built-in defaults, then the settings file (`--config FILE`, or
the one the app saved last time at `settings.default_path()`), then each subcommand's
flags. With no subcommand the live app starts (`run`).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__, doctor, native_log, settings as settings_mod
from .commands import (doctor as doctor_command, download, generate, gui, import_dataset, record, reproduce, run,
                       track, train)
from .settings import SettingsError

# systemd, docker, `timeout` and installation scripts stop a program with SIGTERM, a closed
# terminal sends SIGHUP: both stop it like Ctrl-C, so recordings and checkpoints are kept. SIGINT
# is set too: a program started in the background by a script inherits it ignored.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_RECORDING = "expotion-live.wav"   # where the main command records when there is no sound card
DEFAULT_RECORDING_SECONDS = 30
QUIET_COMMANDS = (None, "run", "gui", "doctor")   # the first commands a performer runs: only the app's lines
BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
BENCHMARKS = ("decode", "generate", "int8", "live", "vision", "synth", "soak", "stage")
SUBCOMMAND_MODULES = (doctor_command, run, track, generate, download, gui, record, train, import_dataset, reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expotion-live",
        description="Make music live with your face and body (Expotion on MusicGen). "
                    "With no subcommand, the live app starts.")
    parser.add_argument("--version", action="version", version=f"expotion-live {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help=f"show the libraries' native logs (MediaPipe, LiteRT, ALSA) on stderr; without it "
                             f"the live commands and doctor keep them in {native_log.log_path()}")
    parser.add_argument("--config", metavar="FILE",
                        help=f"TOML settings file (default: {settings_mod.default_path()} if it exists)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        module.add_parser(subparsers)
    bench = subparsers.add_parser("bench", help="benchmarks (bench/*.py): decode, generate, int8, live, vision, synth, soak, stage",
                                  description="Runs bench/NAME.py with the remaining arguments "
                                              "(each prints a table; --json FILE writes it).")
    bench.add_argument("name", choices=BENCHMARKS)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the benchmark (see its --help)")
    bench.set_defaults(handler=run_bench)
    return parser


def run_bench(args, settings: settings_mod.Settings) -> int:
    """Benchmarks live beside the package in bench/ (a source checkout), not inside it."""
    path = BENCH_DIR / f"{args.name}.py"
    if not path.exists():
        print(f"expotion-live: {path} not found: benchmarks run from a source checkout", file=sys.stderr)
        return 1
    spec = importlib.util.spec_from_file_location(f"bench_{args.name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    return module.main(args.args)


def load_settings(config: str | None) -> settings_mod.Settings:
    if config is not None:
        return settings_mod.load(config)
    saved = settings_mod.default_path()
    return settings_mod.load(saved if saved.exists() else None)


def run_default(parser: argparse.ArgumentParser, config: str | None, settings: settings_mod.Settings) -> int:
    """No subcommand: the window where there is a display, else the live path headless.

    Without a sound card the headless path records to DEFAULT_RECORDING instead, so the
    main command shows the whole live path on any machine (the bundled demo video stands
    in for a missing camera, the gesture synth for missing weights).
    """
    head = ["--config", config] if config else []
    if doctor.check_display()[0].ok and not settings.engine.headless:
        args = parser.parse_args([*head, "gui", "--start"])
    else:
        argv = [*head, "run", "--headless"]
        if not settings.audio.out and not doctor.check_audio(settings)[0].ok:
            print(f"expotion-live: no display and no sound card: recording {DEFAULT_RECORDING_SECONDS} s of the "
                  f"live path to {DEFAULT_RECORDING} (Ctrl-C stops early)", file=sys.stderr)
            argv += ["--out", DEFAULT_RECORDING, "--duration", str(DEFAULT_RECORDING_SECONDS)]
        args = parser.parse_args(argv)
    return args.handler(args, settings)


def _stop(signum: int, frame) -> None:
    """A stop signal as Ctrl-C, carrying the signal's name for the line that says what stopped the command."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    # MediaPipe's C++ logging would bury our messages; keep its warnings and errors only.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")   # config warnings the hub weights trigger too
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()   # only it may set signal handlers
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS} if in_main else {}
    quiet = not args.verbose and args.command in QUIET_COMMANDS
    try:
        with native_log.native_logs_to_file(native_log.log_path()) if quiet else contextlib.nullcontext():
            try:
                settings = load_settings(args.config)
            except SettingsError as err:
                if not getattr(args, "diagnoses_settings", False):
                    raise
                settings, args.settings_error = settings_mod.Settings(), str(err)
            if args.command is None:
                return run_default(parser, args.config, settings)
            return args.handler(args, settings)
    except SettingsError as err:
        print(f"expotion-live: settings error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:   # before the command could stop in order (e.g. while a model loads)
        name = err.args[0] if err.args else "SIGINT"
        print(f"expotion-live{' ' + args.command if args.command else ''}: stopped by {name} before it "
              f"finished", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())

"""`doctor`: check cameras, audio, trackers, weights and the settings file before a show (`..doctor`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..doctor import check_settings_file, run_checks
from ..settings import Settings


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check cameras, audio, trackers, weights before a show")
    p.add_argument("--checkpoints", default="checkpoints", help="where weights and adaptors live (default: checkpoints/)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when something a show needs is missing")
    p.set_defaults(handler=_doctor, diagnoses_settings=True)   # runs on a damaged settings file, saying so


def _doctor(args, settings: Settings) -> int:
    checks = [*check_settings_file(getattr(args, "config", None), getattr(args, "settings_error", "")),
              *run_checks(settings, Path(args.checkpoints))]
    show_ready = all(c.ok for c in checks if c.needed_for_show)
    if args.json:
        print(json.dumps({"show_ready": show_ready, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            tag = "OK" if c.ok else ("MISSING" if c.needed_for_show else "NOTE")
            print(f"{tag:8} {c.name}: {c.detail}")
            if c.fix:
                print(f"{'':8}   -> {c.fix}")
        print("ready for a show" if show_ready else "NOT ready for a show (see MISSING above)")
    return 1 if args.strict and not show_ready else 0

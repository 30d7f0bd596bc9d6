"""Soak: the headless live path for a long time, watched for leaks, dropouts and drift.

Runs what `expotion-live run --headless --file-only` runs (the demo video looped through
MediaPipe, the music source, the ring, a file sink paced by the wall clock) for
`--minutes`, and every `--every` seconds prints one row: process memory (RSS), audio
played, underruns (the ring ran dry), gaps (silences of 50 ms or more in what was played
after the first sound), stretched seconds (the last chunk looped while generation was
behind), the run's tracking rate, the sustained RTF and the machine's load average (on a
shared machine, other work explains dropouts a leak would not). The engine is a tiny
random MusicGen built on the spot (the real code path at a size any machine runs),
`--model DIR` for real weights, or `--engine synth`.

    expotion-live bench soak --minutes 60 [--every 60] [--engine musicgen|synth] [--json soak.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from expotion_live.atomic import write_json  # noqa: E402
from expotion_live.commands.common import number  # noqa: E402
from expotion_live.settings import Settings, override  # noqa: E402

GAP_SECONDS = 0.05          # a silence this long in the middle of the music is heard as a dropout
SILENT_PEAK = 1e-4          # the same threshold as the player's "first sound"


class GapCounter:
    """A recorder tap that counts silences of GAP_SECONDS or more after the first sound."""

    def __init__(self, sample_rate: int):
        self.min_samples = round(GAP_SECONDS * sample_rate)
        self.gaps = 0
        self.longest_samples = 0
        self._heard = False
        self._silent = 0

    def push(self, block: np.ndarray) -> None:
        if float(np.max(np.abs(block))) > SILENT_PEAK:
            if self._silent >= self.min_samples:
                self.gaps += 1
            self._heard, self._silent = True, 0
        elif self._heard:
            self._silent += block.shape[0]
            self.longest_samples = max(self.longest_samples, self._silent)


def rss_mib() -> float:
    """Resident memory of this process now (not the peak), MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=number(float, 0.1, 7 * 24 * 60), default=60.0)
    parser.add_argument("--every", type=number(float, 1.0, 3600), default=60.0, help="seconds between rows")
    parser.add_argument("--engine", choices=("musicgen", "synth"), default="musicgen")
    parser.add_argument("--model", help="MusicGen folder (default: a tiny random one built now)")
    parser.add_argument("--video", default=str(REPO / "assets" / "demo_face.mp4"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from expotion_live.capture.sources import open_source
    from expotion_live.capture.thread import CaptureThread
    from expotion_live.live.session import LiveSession
    from expotion_live.live.source import build_source

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.engine == "musicgen" and model is None:
            from expotion_live.testing.random_musicgen import save_random_musicgen

            model = str(save_random_musicgen(Path(scratch) / "tiny", preset="tiny", seed=0))
        settings = override(Settings(), {"camera.source": args.video, "engine.kind": args.engine,
                                         "model.dir": model or Settings().model.dir, "model.precision": "fp32",
                                         "generation.seed": 0, "osc.control_port": 0})
        source = build_source(settings)
        session = LiveSession(settings, source, CaptureThread(open_source(args.video, settings.camera)),
                              output="file")
        gaps = GapCounter(settings.audio.sample_rate)
        session.player.tap = gaps
        rows = []
        print(f"soak: {type(source).__name__} on {Path(args.video).name} (looped), file sink paced by the clock, "
              f"{args.minutes:g} min", flush=True)
        print(f"{'minute':>7} {'RSS MiB':>8} {'played s':>9} {'underruns':>9} {'gaps':>5} {'longest gap s':>13} "
              f"{'stretched s':>11} {'tracking fps':>12} {'RTF':>6} {'load':>5}", flush=True)
        session.start()
        began = time.monotonic()
        try:
            while True:
                elapsed = time.monotonic() - began
                wait = min(args.every * (len(rows) + 1), args.minutes * 60) - elapsed
                if wait > 0 and session.wait(timeout=wait) is False:
                    print(f"generation failed: {session.status().error}", file=sys.stderr)
                    break
                status = session.status()
                row = {"minute": (time.monotonic() - began) / 60, "rss_mib": rss_mib(),
                       "played_seconds": status.played_seconds, "underruns": status.underruns, "gaps": gaps.gaps,
                       "longest_gap_seconds": gaps.longest_samples / settings.audio.sample_rate,
                       "stretched_seconds": status.stretched_seconds, "tracking_fps": status.tracking_rate,
                       "rtf": status.sustained_rtf, "load_average": os.getloadavg()[0]}
                rows.append(row)
                rtf = "-" if row["rtf"] is None else f"{row['rtf']:.2f}"
                print(f"{row['minute']:7.1f} {row['rss_mib']:8.0f} {row['played_seconds']:9.0f} "
                      f"{row['underruns']:9d} {row['gaps']:5d} {row['longest_gap_seconds']:13.2f} "
                      f"{row['stretched_seconds']:11.1f} {row['tracking_fps']:12.1f} {rtf:>6} "
                      f"{row['load_average']:5.1f}", flush=True)
                if row["minute"] >= args.minutes - 1e-6:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            session.stop()
    if rows:
        first, last = rows[0], rows[-1]
        print(f"RSS {first['rss_mib']:.0f} -> {last['rss_mib']:.0f} MiB after the first row "
              f"({last['rss_mib'] - first['rss_mib']:+.0f}); {last['underruns']} underruns, {last['gaps']} gaps, "
              f"{last['stretched_seconds']:.1f} s stretched in {last['played_seconds']:.0f} s played")
    if args.json:
        write_json(args.json, {"engine": args.engine, "minutes": args.minutes, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

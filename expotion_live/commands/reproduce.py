"""`reproduce`: the rows of the paper's Table 1 trained and evaluated on one prepared dataset, one seed.

Each row is the same `train` and `evaluate` a user would type (run through their own
parser and handlers, so every check they make applies), into OUT/runs/<row>/ and
OUT/evaluations/<row>.json; a row whose evaluation exists is done, and training resumes
where it stopped, so running the command again continues row by row. The table
(`report`) puts the paper's numbers for the same configuration below ours.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..features.external import TRACKER
from .common import add_device_flag, fail

PAPER = "Izzati et al., ISMIR 2025, Table 1"


@dataclass(frozen=True)
class Row:
    name: str
    inputs: str | None          # None: MusicGen with the captions, no adaptor (the paper's baseline)
    captions: bool = True


ROWS = (Row("musicgen", None), Row("face", "face"), Row("motion", "motion"), Row("face+motion", "face+motion"),
        Row("motion-generic", "motion", captions=False))

# The paper's numbers, by row and motion extractor: FAD-VGG, KL, IS, tempo error, beat F1, text-audio, video-audio.
_KEYS = ("fad_vggish", "kl_passt", "is", "tempo_error_bpm", "beat_f1", "clap", "video_music")
_PAPER = {
    ("musicgen", None): (2.76, 0.79, 1.54, 35.84, 0.33, 0.50, 0.42),
    ("face", None): (2.52, 0.74, 1.45, 31.53, 0.38, 0.48, 0.55),
    ("motion", "raft"): (2.25, 0.66, 1.53, 33.71, 0.37, 0.52, 0.59),
    ("motion", "synchformer"): (1.93, 0.65, 1.57, 32.89, 0.36, 0.52, 0.61),
    ("face+motion", "synchformer"): (2.55, 0.67, 1.49, 32.72, 0.37, 0.54, 0.59),
    ("motion-generic", "raft"): (3.56, 1.05, 1.16, 28.07, 0.37, 0.38, 0.65),
    ("motion-generic", "synchformer"): (3.52, 1.08, 1.20, 31.03, 0.35, 0.37, 0.61),
}
_MOTION = {"musicgen": None, "face": None, "motion": "raft", "face+motion": "synchformer", "motion-generic": "raft"}

# --tiny: the whole wiring in seconds on a tiny model and a few short clips (with --epochs 1).
TINY_TRAIN = ["--batch-size", "2", "--segment-seconds", "0.6"]
# the paper's: whole pieces, every frame seen
PAPER_WINDOWS = ["--paper-windows", "--look-ahead", "unlimited", "--look-back", "unlimited"]
TINY_EVALUATE = ["--seconds", "0.6", "--top-k", "50"]


def paper_row(row: Row, motion_source: str) -> dict:
    """The paper's row for `row` ({"run", "inputs", "prompt", "summary"}), its motion extractor the closest to ours."""
    extractor = _MOTION[row.name]
    if extractor is not None and (row.name, motion_source) in _PAPER:
        extractor = motion_source
    label = row.name + (f" ({extractor})" if extractor else "")
    return {"run": f"paper: {label}", "inputs": row.inputs or "MusicGen (text only)",
            "prompt": "Caption" if row.captions else "Generic",
            "summary": dict(zip(_KEYS, _PAPER[(row.name, extractor)]))}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="the paper's Table 1 rows trained and evaluated on one prepared dataset (resumable)",
        description="Train and evaluate the rows of the paper's Table 1 (" + ", ".join(r.name for r in ROWS) +
                    ") on DATA's test split with one seed, then write OUT/table.md and OUT/table.png with the "
                    "paper's numbers beside ours. Run it again to continue after a stop. See docs/training.md.")
    p.add_argument("data", help="dataset folder prepared with `expotion-live prepare`")
    p.add_argument("--model", help="MusicGen directory (settings: model.dir)")
    add_device_flag(p)
    p.add_argument("--out", required=True, help="folder for the runs, the evaluations and the table")
    p.add_argument("--rows", default=",".join(r.name for r in ROWS),
                   help="comma-separated rows to run (default: all: %(default)s)")
    p.add_argument("--face-source", default=TRACKER, help="as train --face-source (default: %(default)s)")
    p.add_argument("--motion-source", default=TRACKER,
                   help="as train --motion-source, e.g. raft or synchformer as the paper (default: %(default)s)")
    p.add_argument("--seed", default="0", help="train and sampling seed (default: %(default)s)")
    p.add_argument("--epochs", default="40", help="per trained row (default: %(default)s, the paper's)")
    for flag, metavar in (("--classifier", "DIR"), ("--clap", "DIR"), ("--vggish", "FILE"), ("--passt", "FILE"),
                          ("--languagebind", "DIR")):
        p.add_argument(flag, metavar=metavar, help=f"as evaluate {flag}")
    p.add_argument("--as-live", action="store_true",
                   help="train as live generation plays (live-shaped windows, no look-ahead) instead of the paper's "
                        "whole pieces with every frame seen")
    p.add_argument("--tiny", action="store_true", help="1 epoch on 0.6 s pieces, 0.6 s of music per clip: "
                                                       "proves the wiring, not the paper")
    p.set_defaults(handler=run_reproduce)


def _common(args) -> list[str]:
    return [args.data, *(["--model", args.model] if args.model else []),
            *(["--device", args.device] if args.device else []), "--seed", args.seed, "--quiet"]


def train_argv(args, row: Row, run: Path) -> list[str]:
    return ["train", *_common(args), "--out", str(run), "--inputs", row.inputs,
            "--epochs", "1" if args.tiny else args.epochs, "--face-source", args.face_source,
            "--motion-source", args.motion_source, *([] if row.captions else ["--no-captions"]),
            *([] if args.as_live else PAPER_WINDOWS), *(TINY_TRAIN if args.tiny else [])]


def evaluate_argv(args, row: Row, run: Path, result: Path) -> list[str]:
    """`evaluate` of the row's adaptor (best/ when training had validation clips), or of the base model."""
    metrics = [a for flag in ("classifier", "clap", "vggish", "passt", "languagebind")
               if getattr(args, flag) for a in (f"--{flag}", getattr(args, flag))]
    adaptor = [] if row.inputs is None else ["--adaptor", str(run / "best" if (run / "best").is_dir() else run)]
    return ["evaluate", *_common(args), *metrics, *adaptor, *(TINY_EVALUATE if args.tiny else []),
            "--json", str(result)]


def run_reproduce(args, settings) -> int:
    from . import train as commands
    from ..train.report import ReportError, write_report

    wanted = args.rows.split(",")
    unknown = [name for name in wanted if name not in {r.name for r in ROWS}]
    if unknown:
        print(f"expotion-live: unknown row {unknown[0]!r}; rows: {', '.join(r.name for r in ROWS)}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="expotion-live")
    commands.add_parser(parser.add_subparsers())
    out = Path(args.out)
    rows = [r for r in ROWS if r.name in wanted]
    for row in rows:
        run, result = out / "runs" / row.name, out / "evaluations" / f"{row.name}.json"
        if result.is_file():
            print(f"{row.name}: done ({result})")
            continue
        steps = [lambda: train_argv(args, row, run)] if row.inputs is not None else []
        for argv in (*steps, lambda: evaluate_argv(args, row, run, result)):   # evaluate's adaptor after training
            step = argv()
            print(f"{row.name}: expotion-live {' '.join(step)}", flush=True)
            parsed = parser.parse_args(step)
            code = parsed.handler(parsed, settings)
            if code != 0:
                print(f"expotion-live: row {row.name} stopped at `{step[0]}` (exit {code}); run the same "
                      f"command again to continue", file=sys.stderr)
                return code
    done = [r for r in rows if (out / "evaluations" / f"{r.name}.json").is_file()]
    try:
        md, png = write_report([out / "evaluations" / f"{r.name}.json" for r in done], out,
                               given=[paper_row(r, args.motion_source) for r in done],
                               note=f"Rows 'paper:' are {PAPER} (musicgen-large, MARLIN face, RAFT or Synchformer "
                                    f"motion, SALMONN captions). Comparable with them: FAD-VGG, KL-PaSST, IS, tempo "
                                    f"error, beat F1, CLAP (LAION CLAP) and Video-Audio (LanguageBind); FAD and KL "
                                    f"on the AST tagger are not. See docs/training.md.")
    except (ReportError, OSError) as err:
        return fail(str(err))
    print(md.read_text(encoding="utf-8"), end="")
    print(f"table: {md}, {png}")
    return 0

"""`report`: the `evaluate --json` files of several runs as one table in the paper's layout (Table 1).

One row per configuration (what the adaptor sees, caption or generic prompt), the
columns of the paper's Table 1 that any of the runs computed, and optionally rows given
as they are (the paper's own numbers, `reproduce`). Written as markdown and as a PNG,
each atomically. Runs scored on different clips cannot share a table: the numbers would
not be comparable.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path

# (summary key, column heading, digits) in Table 1's order; FAD and KL on the AST tagger after the paper's networks.
COLUMNS = (("fad_vggish", "FAD-VGG ↓", 2), ("kl_passt", "KL-PaSST ↓", 2), ("fad", "FAD ↓", 2), ("kl", "KL ↓", 2),
           ("is", "IS ↑", 2), ("tempo_error_bpm", "Tempo err. (BPM) ↓", 2), ("beat_f1", "Beat F1 ↑", 2),
           ("clap", "CLAP ↑", 2), ("video_music", "Video-Audio ↑", 2))


class ReportError(ValueError):
    """Evaluation files that cannot make one table; the message says which and why."""


def read_runs(paths: list[str | os.PathLike]) -> list[dict]:
    runs = []
    for path in map(Path, paths):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ReportError(f"cannot read {path}: {err}") from None
        if not isinstance(run, dict) or "summary" not in run or "clips" not in run:
            raise ReportError(f"{path} is not a JSON file written by `expotion-live evaluate --json`")
        runs.append(run | {"file": path.name})
    first = runs[0]
    for run in runs[1:]:
        if [c["clip"] for c in run["clips"]] != [c["clip"] for c in first["clips"]]:
            raise ReportError(f"{run['file']} scored other clips than {first['file']} ({run.get('split')} vs "
                              f"{first.get('split')} split): evaluate every run on the same prepared data and split")
    return runs


def rows(runs: list[dict], given: list[dict] = ()) -> tuple[list[str], list[list[str]]]:
    """Headings and cells: Run, Input, Prompt, then the metrics any run computed ("–" where one did not).

    `given` rows ({"run", "inputs", "prompt", "summary"}) follow the runs, in the same columns.
    """
    columns = [c for c in COLUMNS if any(c[0] in row["summary"] for row in [*runs, *given])]
    headings = ["Run", "Input", "Prompt"] + [heading for _, heading, _ in columns]
    labelled = []
    for run in runs:
        configuration = run.get("configuration") or {}
        inputs = configuration.get("inputs") or "MusicGen (text only)"
        prompt = "Caption" if configuration.get("captions", True) else "Generic"
        labelled.append((Path(run["file"]).stem, inputs, prompt, run["summary"]))
    labelled += [(row["run"], row["inputs"], row["prompt"], row["summary"]) for row in given]
    table = [[name, inputs, prompt, *(f"{summary[key]:.{digits}f}" if key in summary else "–"
                                      for key, _, digits in columns)]
             for name, inputs, prompt, summary in labelled]
    return headings, table


def markdown(headings: list[str], table: list[list[str]], runs: list[dict], note: str = "") -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "|".join("---" for _ in headings) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    first = runs[0]
    lines += ["", f"{first['summary']['clips']} clips of the {first.get('split', '?')} split, "
                  f"{first['clips'][0]['seconds']:g} s each; FAD, KL, IS, CLAP and Video-Audio over the whole set, "
                  f"tempo error and beat F1 averaged over clips."]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_report(paths: list[str | os.PathLike], out_dir: str | os.PathLike, given: list[dict] = (),
                 note: str = "") -> tuple[Path, Path]:
    """Write `table.md` and `table.png` into `out_dir` (with `given` rows and a `note` below); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = read_runs(paths)
    headings, table = rows(runs, given)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(headings, table, runs, note), encoding="utf-8")

    fig, ax = plt.subplots(figsize=(1.6 * len(headings), 0.5 + 0.35 * (len(table) + 1)), dpi=120)
    ax.axis("off")
    grid = ax.table(cellText=table, colLabels=headings, loc="center", cellLoc="center")
    grid.auto_set_font_size(False)
    grid.set_fontsize(9)
    grid.auto_set_column_width(list(range(len(headings))))
    bounds = grid.get_window_extent(fig.canvas.get_renderer()).transformed(fig.dpi_scale_trans.inverted())
    bounds = bounds.padded(0.1)   # the table itself, not the figure's empty margins
    png = out_dir / "table.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", bbox_inches=bounds)
    plt.close(fig)
    return md, png

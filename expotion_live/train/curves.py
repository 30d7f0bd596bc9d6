"""The training curve as a PNG: training loss per step, validation loss per epoch."""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_path


def plot_curves(history: dict, path: str | os.PathLike) -> Path:
    """Write `history` ({"train": [(step, loss)], "val": [(step, loss)], "base_val": loss}) to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: training runs headless
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if history["train"]:
        steps, losses = zip(*history["train"])
        ax.plot(steps, losses, lw=0.8, alpha=0.7, label="train CE")
    if history["val"]:
        steps, losses = zip(*history["val"])
        ax.plot(steps, losses, "o-", label="validation CE")
    if history.get("base_val") is not None:
        ax.axhline(history["base_val"], color="grey", ls="--", label="validation CE, base model (no adaptor)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy per token (nats)")
    ax.set_title("Expotion adaptor training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path

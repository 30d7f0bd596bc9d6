"""Features made by another extractor (the paper's MARLIN, Synchformer or RAFT) as a face or motion input.

The live tracker's features are one source of what the adaptor sees (`TRACKER`); a
clip folder may also hold features computed elsewhere, at their own rate and width, in
`<source>.features.npz` (`source` is the name an adaptor records, e.g. "raft"):

    features   (T, D) float, step i at i / rate seconds; or (T, S, D): S sub-steps per
               step (Synchformer's 8 per 16-frame segment), flattened to (T*S, D) at S * rate
    rate       steps per second (the authors published 5)

`resample` puts them on the 50 Hz EnCodec grid by the paper's temporal smoothing, eq. (1)
and (3). No live session can compute such features, so an adaptor trained on them plays
only offline on prepared clips (`model.adaptor.check_live_sources`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .schema import FRAME_RATE

TRACKER = "tracker"                 # the live tracker's face / motion vectors (features/schema.py)
SUFFIX = ".features.npz"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class ExternalFeaturesError(ValueError):
    """An external features file or source name that cannot be used; the message says what to do."""


def check_source(name: str) -> str:
    """`name` if it can name a source (TRACKER or lower-case letters, digits, '-' and '_'), else the error."""
    if name != TRACKER and not _NAME.fullmatch(name or ""):
        raise ExternalFeaturesError(f"feature source {name!r}: use {TRACKER!r} or a short lower-case name such "
                                    f"as 'raft' (letters, digits, '-', '_'), the stem of a <name>{SUFFIX} file")
    return name


@dataclass(frozen=True)
class ExternalFeatures:
    values: np.ndarray      # (T, D) float32, step i at i / rate seconds
    rate: float             # steps per second

    @property
    def width(self) -> int:
        return self.values.shape[1]

    def resample(self, n_frames: int, frame_rate: int = FRAME_RATE) -> np.ndarray:
        """(n_frames, D) float32 on the `frame_rate` grid, eq. (1)/(3): z_t = (1 - α) z_i + α z_{i+1}.

        Frame j is at t = j * rate / frame_rate in feature steps, i = ⌊t⌋ and α = t - i;
        past the last step the last one holds.
        """
        T = self.values.shape[0]
        t = np.minimum(np.arange(n_frames) * (self.rate / frame_rate), T - 1)   # (n_frames,) in feature steps
        i = np.floor(t).astype(np.int64)
        alpha = (t - i)[:, None]
        following = np.minimum(i + 1, T - 1)
        return ((1.0 - alpha) * self.values[i] + alpha * self.values[following]).astype(np.float32)


def features_file(folder: str | os.PathLike, source: str) -> Path:
    return Path(folder) / f"{check_source(source)}{SUFFIX}"


def sources_in(folder: str | os.PathLike) -> list[str]:
    """The sources a clip folder holds features of (its `<source>.features.npz` files)."""
    return sorted(p.name[:-len(SUFFIX)] for p in Path(folder).glob(f"*{SUFFIX}") if p.is_file())


def write_features(path: str | os.PathLike, values: np.ndarray, rate: float) -> Path:
    """Store `values` (T, D) or (T, S, D) at `rate` steps per second as a features file, atomically."""
    features = _checked(np.asarray(values), float(rate), Path(path))
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.values, rate=np.float64(features.rate))
    return Path(path)


def read_features(path: str | os.PathLike) -> ExternalFeatures:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            values, rate = data["features"], float(data["rate"])
    except FileNotFoundError:
        raise ExternalFeaturesError(f"{path} does not exist") from None
    except (OSError, ValueError, KeyError) as err:
        raise ExternalFeaturesError(f"{path} is not a features file (arrays 'features' and 'rate'): {err}") from None
    return _checked(values, rate, path)


def _checked(values: np.ndarray, rate: float, path: Path) -> ExternalFeatures:
    """(T, S, D) flattened to (T*S, D) at S * rate; shape, rate and finiteness checked."""
    if values.ndim == 3:
        T, S, D = values.shape
        values, rate = values.reshape(T * S, D), rate * S
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ExternalFeaturesError(f"{path}: features of shape {values.shape}, expected (steps, width) "
                                    f"or (steps, sub-steps, width)")
    if not (np.isfinite(rate) and rate > 0):
        raise ExternalFeaturesError(f"{path}: rate {rate} must be a positive number of steps per second")
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise ExternalFeaturesError(f"{path}: features must be finite numbers")
    return ExternalFeatures(values.astype(np.float32), rate)

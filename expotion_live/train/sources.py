"""A prepared clip's face and motion as an adaptor reads them: the tracker's, or an external source's.

`prepare` caches every `<source>.features.npz` of a clip folder (features/external.py)
beside the tracker's arrays, already on the clip's 50 Hz grid, as `external_<source>.npy`;
`clip_for` hands a clip to training or evaluation with face and motion taken from the
sources an `AdaptorConfig` names, so the trainer and `evaluate` read one kind of clip.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..features.external import TRACKER, read_features, sources_in
from .dataset import CachedClip, DatasetError

PREFIX = "external_"


def _path(cache_dir: str | os.PathLike, name: str, source: str) -> Path:
    return Path(cache_dir) / "clips" / name / f"{PREFIX}{source}.npy"


def cache_external(cache_dir: str | os.PathLike, name: str, folder: str | os.PathLike, frames: int) -> list[str]:
    """Resample each features file of clip folder `folder` to `frames` 50 Hz frames into the cache; their sources."""
    sources = sources_in(folder)
    for source in sources:
        path = _path(cache_dir, name, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        values = read_features(Path(folder) / f"{source}.features.npz").resample(frames)
        with atomic_path(path) as tmp:
            np.save(tmp, values)
    return sources


def load_external(cache_dir: str | os.PathLike, clip: CachedClip, source: str) -> np.ndarray:
    """(T, D) float32 of `source` for a prepared clip, memory-mapped."""
    path = _path(cache_dir, clip.name, source)
    if not path.is_file():
        raise DatasetError(f"clip {clip.name!r} has no {source!r} features: put {source}.features.npz in its folder "
                           f"and run `expotion-live prepare` again")
    try:
        values = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path} is damaged ({err}); run `expotion-live prepare` again") from None
    if values.ndim != 2 or values.shape[0] != clip.n_frames:
        raise DatasetError(f"{path} has shape {values.shape}, expected ({clip.n_frames}, width); "
                           f"run `expotion-live prepare` again")
    return values


def clip_for(config, cache_dir: str | os.PathLike, clip: CachedClip) -> CachedClip:
    """`clip` with face and motion from the sources `config` (an AdaptorConfig) names."""
    changes = {key: load_external(cache_dir, clip, source)
               for key, source in (("face", config.face_source), ("motion", config.motion_source))
               if source != TRACKER}
    return dataclasses.replace(clip, **changes)


def source_width(cache_dir: str | os.PathLike, clips: list[CachedClip], source: str) -> int:
    """The width of `source`'s features, the same in every clip (an adaptor's input size follows it)."""
    if not clips:
        raise DatasetError(f"no clips to read the width of {source!r} features from")
    widths = {clip.name: load_external(cache_dir, clip, source).shape[1] for clip in clips}
    if len(set(widths.values())) > 1:
        raise DatasetError(f"{source!r} features differ in width between clips "
                           f"({', '.join(f'{n}: {w}' for n, w in list(widths.items())[:3])}): one extractor per source")
    return next(iter(widths.values()))

"""Training data: the folder layout a performer records into, and the cache `prepare` writes.

Layout (one folder per clip; names are free):

    DATA/
      clip_001/
        take.mp4          the performer's video (exactly one video file)
        music.wav         the music they moved to (optional: else the video's own audio track)
        caption.txt       a text description of the music (optional)
      clip_002/ ...

Cache (written by `prepare`, read by `train` and `evaluate`), `DATA/.expotion_cache/`:

    index.json            model it was prepared for, prepared clips, skipped clips and why
    clips/<name>/         face.npy (T, FACE_DIM) float32, motion.npy (T, MOTION_DIM) float32,
                          flow.npy (T, *FLOW_SHAPE) float16, codes.npy (4, T) int16, meta.json

Every array is on the 50 Hz EnCodec frame grid: row t of the features and column t of
the codes cover the same 20 ms. `meta.json` is written last, so a clip folder without
it is incomplete (an interrupted `prepare`) and is redone on the next run. Arrays are
plain .npy so training memory-maps them instead of loading hours of flow into RAM.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..capture.sources import VIDEO_SUFFIXES
from ..features.schema import FACE_DIM, FLOW_DTYPE, FLOW_SHAPE, MOTION_DIM, TimelineWindow
from ..model.conditioning import ChunkWindow

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus")
CAPTION_FILE = "caption.txt"
CACHE_DIR = ".expotion_cache"
INDEX_FILE = "index.json"
CACHE_VERSION = 1


class DatasetError(ValueError):
    """A dataset folder or cache that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ClipSource:
    """One clip folder of the layout above."""

    name: str
    video: Path
    audio: Path | None      # None: use the video's own audio track
    caption: str            # "" when the folder has no caption.txt


def find_clips(data_dir: str | os.PathLike) -> tuple[list[ClipSource], list[tuple[str, str]]]:
    """Scan `data_dir`; return the usable clips and (folder name, reason) for folders that are not."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"dataset folder {data_dir} does not exist")
    clips, problems = [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries = sorted(folder.iterdir())
        broken = [p for p in entries if p.is_symlink() and not p.exists()
                  and p.suffix.lower() in VIDEO_SUFFIXES + AUDIO_SUFFIXES]
        if broken:
            problems.append((folder.name, f"{broken[0].name} is a broken link (to {os.readlink(broken[0])})"))
            continue
        files = [p for p in entries if p.is_file()]
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        audios = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
        if len(videos) != 1:
            problems.append((folder.name, f"expected one video ({', '.join(VIDEO_SUFFIXES)}), found {len(videos)}"))
            continue
        if len(audios) > 1:
            problems.append((folder.name, f"expected at most one audio file, found {len(audios)}"))
            continue
        caption_file = folder / CAPTION_FILE
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
        clips.append(ClipSource(folder.name, videos[0], audios[0] if audios else None, caption))
    return clips, problems


def cache_dir_for(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / CACHE_DIR


@dataclass
class CachedClip:
    """One prepared clip, memory-mapped: features and codes on the same 50 Hz grid."""

    name: str
    caption: str
    face: np.ndarray        # (T, FACE_DIM) float32
    motion: np.ndarray      # (T, MOTION_DIM) float32
    flow: np.ndarray        # (T, *FLOW_SHAPE) float16
    codes: np.ndarray       # (K, T) int16

    @property
    def n_frames(self) -> int:
        return self.codes.shape[1]


def write_clip(cache_dir: str | os.PathLike, name: str, window: TimelineWindow, codes: np.ndarray,
               caption: str, source_stamp: dict) -> int:
    """Store one clip, trimmed to the frames both the video and the audio cover; return that count.

    `source_stamp` (sizes and mtimes of the source files) lets `prepare` skip clips that
    are already cached and unchanged.
    """
    n = min(window.n_frames, codes.shape[1])
    folder = Path(cache_dir) / "clips" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)   # incomplete until meta.json is back
    arrays = {"face": window.face[:n].astype(np.float32), "motion": window.motion[:n].astype(np.float32),
              "flow": window.flow[:n].astype(FLOW_DTYPE), "codes": codes[:, :n].astype(np.int16)}
    for key, array in arrays.items():
        with atomic_path(folder / f"{key}.npy") as tmp:
            np.save(tmp, array)
    _write_meta(folder, {"version": CACHE_VERSION, "frames": n, "caption": caption, "source": source_stamp})
    return n


def _write_meta(folder: Path, meta: dict) -> None:
    with atomic_path(folder / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def set_caption(cache_dir: str | os.PathLike, name: str, caption: str) -> None:
    """Give a cached clip a new caption; the caption is no part of the tracked features, so nothing is redone."""
    meta = read_meta(cache_dir, name)
    if meta is None:
        raise DatasetError(f"clip {name!r} is not prepared in {cache_dir}; run `expotion-live prepare` again")
    _write_meta(Path(cache_dir) / "clips" / name, meta | {"caption": caption})


def read_meta(cache_dir: str | os.PathLike, name: str) -> dict | None:
    """The clip's meta.json, or None when the clip is not (completely) cached."""
    path = Path(cache_dir) / "clips" / name / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return meta if meta.get("version") == CACHE_VERSION else None


def load_clip(cache_dir: str | os.PathLike, name: str) -> CachedClip:
    meta = read_meta(cache_dir, name)
    if meta is None:
        raise DatasetError(f"clip {name!r} is not prepared in {cache_dir}; run `expotion-live prepare` again")
    folder = Path(cache_dir) / "clips" / name
    arrays = {}
    for key in ("face", "motion", "flow", "codes"):
        try:
            arrays[key] = np.load(folder / f"{key}.npy", mmap_mode="r")
        except (OSError, ValueError) as err:    # truncated or overwritten: "mmap length is greater than file size"
            raise DatasetError(f"{folder / key}.npy is damaged ({err}); run `expotion-live prepare` "
                               f"again, it rebuilds damaged clips") from None
    clip = CachedClip(name=name, caption=meta["caption"], **arrays)
    T = meta["frames"]
    expected = {"face": (T, FACE_DIM), "motion": (T, MOTION_DIM), "flow": (T, *FLOW_SHAPE),
                "codes": (clip.codes.shape[0], T)}
    for key, shape in expected.items():
        if getattr(clip, key).shape != shape:
            raise DatasetError(f"{folder / key}.npy has shape {getattr(clip, key).shape}, expected {shape}; "
                               f"the cache is from another version: delete {folder} and run prepare again")
    return clip


def write_index(cache_dir: str | os.PathLike, index: dict) -> None:
    with atomic_path(Path(cache_dir) / INDEX_FILE) as tmp:
        tmp.write_text(json.dumps(index, indent=2), encoding="utf-8")


def read_index(cache_dir: str | os.PathLike) -> dict:
    path = Path(cache_dir) / INDEX_FILE
    if not path.is_file():
        raise DatasetError(f"no prepared data at {path.parent}: run `expotion-live prepare DATA --model DIR` first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); run prepare again") from None
    if index.get("version") != CACHE_VERSION:
        raise DatasetError(f"{path} was written by another version; run prepare again")
    return index


def split_clips(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic clip-level train/validation split (segments of one clip never straddle it)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {val_fraction}")
    order = sorted(names)
    np.random.default_rng(seed).shuffle(order)
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and len(order) >= 2:
        n_val = max(1, n_val)
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass(frozen=True)
class Segment:
    clip: int       # index into the clip list
    start: int      # first code frame
    length: int     # code frames
    first: int = 0  # decoder position of the video window's frame 0 (conditioning.ChunkWindow.first)
    frames: int = 0  # video frames in the window; 0: `length`, aligned with the codes (the paper)

    @property
    def window(self) -> slice:
        """The clip's video frames for the adaptor: the frame at decoder position p is clip frame start + p."""
        return slice(self.start + self.first, self.start + self.first + (self.frames or self.length))


def segments(clips: list[CachedClip], length: int) -> list[Segment]:
    """Non-overlapping fixed-length segments of every clip (the paper trains on 10 s pieces)."""
    return [Segment(i, start, length)
            for i, clip in enumerate(clips)
            for start in range(0, clip.n_frames - length + 1, length)]


def cut(window: ChunkWindow, piece: Segment) -> Segment:
    """A live chunk's window (the conditioning contract's) cut from the start of a fixed-length `piece`:
    the codes since the stream's start, and the video at the positions the stream puts it."""
    if window.footprint() > piece.length:
        raise DatasetError(f"a live window of {window.footprint()} frames does not fit a piece of {piece.length}")
    return Segment(piece.clip, piece.start, window.codes, window.first, window.frames)

"""`import human-music-moves`: the paper's dataset, as published, into our clip-folder layout.

The authors' lists (`train.lst`, `test.lst` in their research code) hold one clip per line:

    <...>/raft_5fps/<clip>.pt|<...>/audio_rvq/<audio>_clip<N>.wav.npy|{'audio_id': ..., 'caption': '<s> ... </s>'}

the clip's 5 fps RAFT features, its music's EnCodec codes and the SALMONN caption. Their
paths point into the authors' machines, so files are found by name anywhere under the
local copy: the video `<clip>.mp4` (the authors' code swaps raft_5fps for clips), the music
`<audio>_clip<N>` with an audio suffix (else prepare uses the video's sound track), and
with `feature_dirs` each source's `<clip>.pt` or `.npy`, stored as that clip's
`<source>.features.npz` (features/external.py) at `feature_rate`.

Each clip becomes DST/<clip>/ with take.mp4, music.*, caption.txt and the features; the
lists' split becomes DST/split.json, which `prepare` keeps as its test split. Files are
hard-linked where the file system allows (else copied), each atomically; running the
import again redoes nothing already complete.
"""
from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..atomic import atomic_path, write_json
from ..capture.sources import VIDEO_SUFFIXES
from ..features.external import check_source, features_file, write_features
from .dataset import AUDIO_SUFFIXES, CAPTION_FILE, DatasetError
from .prepare import SPLIT_FILE

REPO = "mbzmusic/human-music-moves"     # the dataset on the Hugging Face hub (the authors' README)
LISTS = ("train", "test")
PUBLISHED_RATE = 5.0                    # the authors' features: 5 steps per second
FEATURE_SUFFIXES = (".pt", ".npy")


@dataclass(frozen=True)
class ListedClip:
    name: str           # the feature file's stem: the clip's name in every folder
    audio: str          # stem of the music file (`<audio_id>_clip<N>`)
    caption: str
    split: str          # "train" or "test"


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (clip, reason)


def clean_caption(text: str) -> str:
    """SALMONN's caption without its <s> </s> markers and line breaks."""
    return " ".join(text.replace("<s>", " ").replace("</s>", " ").split())


def parse_line(line: str, split: str, where: str) -> ListedClip:
    """One line of train.lst / test.lst; a line that is not one names `where` (file:line)."""
    parts = line.rstrip("\n").split("|", 2)
    try:
        info = ast.literal_eval(parts[2])
        caption = clean_caption(info["caption"])
    except (IndexError, ValueError, SyntaxError, KeyError, TypeError, AttributeError):
        raise DatasetError(f"{where}: expected FEATURES|CODES|{{'audio_id': ..., 'caption': ...}}, "
                           f"got {line.strip()[:80]!r}") from None
    audio = PurePosixPath(parts[1].strip()).name
    for suffix in (".npy", ".wav"):
        audio = audio.removesuffix(suffix)
    return ListedClip(PurePosixPath(parts[0].strip()).stem, audio, caption, split)


def read_lists(lists_dir: str | os.PathLike) -> list[ListedClip]:
    """The clips of `lists_dir`/train.lst and test.lst; a clip in both counts as a test clip."""
    clips: dict[str, ListedClip] = {}
    for split in LISTS:
        path = Path(lists_dir) / f"{split}.lst"
        if not path.is_file():
            raise DatasetError(f"{path} not found: give --lists the folder with the authors' train.lst and test.lst "
                               f"(github.com/fathinah/expotion)")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                clip = parse_line(line, split, f"{path}:{number}")
                if clip.name not in clips or split == "test":
                    clips[clip.name] = clip
    return sorted(clips.values(), key=lambda c: c.name)


def _by_name(root: Path) -> dict[str, list[Path]]:
    """Every file under `root` by file name (hidden folders such as the hub's .cache left out)."""
    files: dict[str, list[Path]] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            files.setdefault(name, []).append(Path(folder) / name)
    return files


def _find(files: dict[str, list[Path]], stem: str, suffixes: tuple[str, ...]) -> Path | None:
    found = [p for suffix in suffixes for p in files.get(stem + suffix, [])]
    return sorted(found)[0] if found else None


def _place(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (else a copy), never half there; kept when it is already the same size."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def read_feature_file(path: Path) -> np.ndarray:
    """A published feature tensor (.pt, read as tensors only) or array (.npy)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    import torch

    value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise DatasetError(f"{path} holds a {type(value).__name__}, not a tensor of features")
    return value.float().numpy()


def import_dataset(src: str | os.PathLike, dst: str | os.PathLike, lists_dir: str | os.PathLike | None = None,
                   feature_dirs: dict[str, str | os.PathLike] | None = None, feature_rate: float = PUBLISHED_RATE,
                   log: Callable[[str], None] = print) -> ImportReport:
    """Clip folders in `dst` for every listed clip whose video is under `src`, and `dst`/split.json."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DatasetError(f"dataset copy {src} does not exist: download it first (import --download)")
    listed = read_lists(lists_dir or src)
    files = _by_name(src)
    features = {check_source(source): _by_name(Path(folder)) for source, folder in (feature_dirs or {}).items()}
    report = ImportReport()
    for clip in listed:
        video = _find(files, clip.name, VIDEO_SUFFIXES)
        if video is None:
            report.skipped.append((clip.name, f"no video {clip.name}.mp4 under {src}"))
            continue
        found = {source: _find(by_name, clip.name, FEATURE_SUFFIXES) for source, by_name in features.items()}
        missing = [source for source, path in found.items() if path is None]
        if missing:
            report.skipped.append((clip.name, f"no {missing[0]} features {clip.name}.pt under {feature_dirs[missing[0]]}"))
            continue
        folder = dst / clip.name
        try:
            for source, path in found.items():
                if not features_file(folder, source).is_file():
                    folder.mkdir(parents=True, exist_ok=True)
                    write_features(features_file(folder, source), read_feature_file(path), feature_rate)
        except (ValueError, OSError, RuntimeError) as err:    # an unreadable tensor, a bad shape
            report.skipped.append((clip.name, f"unreadable features: {err}"))
            continue
        _place(video, folder / f"take{video.suffix.lower()}")
        music = _find(files, clip.audio, AUDIO_SUFFIXES)
        if music is not None:
            _place(music, folder / f"music{music.suffix.lower()}")
        with atomic_path(folder / CAPTION_FILE) as tmp:
            tmp.write_text(clip.caption + "\n", encoding="utf-8")
        report.imported.append(clip.name)
    if not report.imported:
        raise DatasetError(f"none of the {len(listed)} listed clips has its video under {src} "
                           f"(e.g. {listed[0].name}.mp4): is it a copy of {REPO}?")
    imported = set(report.imported)
    write_json(dst / SPLIT_FILE, {split: [c.name for c in listed if c.split == split and c.name in imported]
                                  for split in LISTS})
    for name, reason in report.skipped:
        log(f"skipped {name}: {reason}")
    test = sum(1 for c in listed if c.split == "test" and c.name in imported)
    log(f"{len(report.imported)} clips in {dst} ({len(report.imported) - test} train, {test} test), "
        f"{len(report.skipped)} skipped; next: expotion-live prepare {dst} --model DIR")
    return report


def download_dataset(target: str | os.PathLike, progress: bool = True) -> Path:
    """The hub's copy of the dataset into `target` (resumable; one-line DownloadError offline)."""
    from ..model.download import fetch_snapshot

    return fetch_snapshot(REPO, target, progress, repo_type="dataset")

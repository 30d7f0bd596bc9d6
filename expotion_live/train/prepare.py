"""`prepare`: turn a folder of performer recordings into the training cache.

Visual features come from `features.offline.extract_video`, the same tracker, filters
and 50 Hz resampling the live app runs, so the adaptor trains on exactly what it will
see on stage. The music becomes EnCodec codes through the base model's own codec.
Clips that cannot be used (unreadable, shorter than `min_seconds`, no face in most
frames) are skipped and listed, never fatal; clips already cached from unchanged
files are not redone, so an interrupted `prepare` continues where it stopped. The caption
is no part of that check: editing caption.txt rewrites the caption, not the tracking.

Expression and head features are relative to the performer's neutral face, taken by the
tracker's own calibration at the start of each clip (`extract_video(calibrate=True)`), as a
live session with `[tracking] calibrate_at_start` takes it: a take begins at rest.

The test split is chosen here and recorded in index.json, so `train` never sees it (nor
picks `best/` with it) and `evaluate` scores it. It is sticky: clips already recorded
keep their side when clips are added, so an adaptor trained earlier has still not seen
the test clips. A dataset that comes with its own split (`SPLIT_FILE`, which `import`
writes from the authors' test.lst) keeps that one instead.

Features of other extractors in a clip folder (`<source>.features.npz`) are cached beside
the tracker's on the same grid (`sources.cache_external`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..features.external import features_file, sources_in
from ..features.schema import FACE_FOUND_COLUMN
from .dataset import (AUDIO_SUFFIXES, CACHE_VERSION, ClipSource, DatasetError, find_clips, load_clip, read_index,
                      read_meta, set_caption, write_clip, write_index)
from .sources import cache_external, load_external

FEATURES = "calibrated-2"   # how the cached features were made: a change redoes every clip
TEST_FRACTION = 0.1         # share of clips held out as the test split
SPLIT_FILE = "split.json"   # in a dataset folder: {"train": [...], "test": [...]}, a published split to keep
SILENCE = 1e-4              # peak below this (-80 dBFS): a music file that holds no music


class AudioReadError(RuntimeError):
    """The music of a clip could not be decoded."""


class NoAudioTrack(AudioReadError):
    """The file has no audio stream at all (a silent video)."""


@dataclass
class PrepareReport:
    prepared: list[tuple[str, int]] = field(default_factory=list)   # (clip, frames), newly written
    reused: list[tuple[str, int]] = field(default_factory=list)     # (clip, frames), cache still valid
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (clip, reason)


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode any audio or video file's first audio track to mono float32 at `sample_rate` (ffmpeg)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioReadError("ffmpeg is not installed (Debian: apt-get install ffmpeg); prepare needs it to read audio")
    result = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
                             "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"], capture_output=True)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        if any("matches no streams" in line for line in detail):   # ffmpeg's words for "-map 0:a:0" finding nothing
            raise NoAudioTrack(f"{path.name} has no audio track")
        raise AudioReadError(f"no readable audio in {path.name}: {detail[-1] if detail else 'ffmpeg failed'}")
    audio = np.frombuffer(result.stdout, dtype=np.float32).copy()   # writable, for torch
    if audio.size == 0:
        raise AudioReadError(f"no audio samples in {path.name}")
    return audio


def codec_fingerprint(codec) -> str:
    """Hash of the codec's quantiser codebooks: codes are only meaningful for this exact codec."""
    digest = hashlib.sha256()
    for name, tensor in sorted(codec.state_dict().items()):
        if "quantizer" in name:
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _stamp(clip: ClipSource) -> dict:
    """What the cached arrays depend on: the source files and how features are made (not the caption)."""
    files = ([clip.video] + ([clip.audio] if clip.audio else [])
             + [features_file(clip.video.parent, source) for source in sources_in(clip.video.parent)])
    return {str(p.name): [p.stat().st_size, p.stat().st_mtime_ns] for p in files} | {"features": FEATURES}


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def choose_test_clips(names: list[str], fraction: float, previous: dict | None) -> list[str]:
    """The test split: round(fraction * clips) clips (at least one), by a hash of their names.

    With the same `fraction` as the `previous` index, its test clips stay test clips and
    its other clips never become test clips; only new clips can fill the split up.
    """
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"test fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return []
    want = max(1, round(len(names) * fraction))
    if len(names) - want < 1:
        raise DatasetError(f"{len(names)} usable clip(s) cannot be split into training and test clips: add clips "
                           f"(at least 2), or prepare with --test-fraction 0 (no held-out test split)")
    kept, known = [], set()
    if previous is not None and previous.get("test_fraction") == fraction:
        known = {c["name"] for c in previous["clips"]}
        kept = [n for n in previous["test"] if n in names]
    fresh = sorted((n for n in names if n not in known), key=_rank)
    return sorted(kept + fresh[:max(0, want - len(kept))])


def published_split(data_dir: str | os.PathLike) -> set[str] | None:
    """The test clips a dataset's SPLIT_FILE names, or None when it has none."""
    import json

    path = Path(data_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
        return set(split["test"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a split file ({{\"train\": [...], \"test\": [...]}}): {err}") from None


def test_clips(index: dict) -> list[str]:
    """The test split recorded in a cache's index."""
    if "test" not in index:
        raise DatasetError("the prepared data has no test split (prepared by an older version): run prepare again")
    return list(index["test"])


def training_clips(index: dict) -> list[str]:
    """The clips `train` may use (for training and choosing best/): all but the test split."""
    test = set(test_clips(index))
    return [c["name"] for c in index["clips"] if c["name"] not in test]


def prepare_dataset(data_dir: str | os.PathLike, musicgen, tracking_settings, cache_dir: str | os.PathLike,
                    min_seconds: float = 10.0, min_face_fraction: float = 0.5, test_fraction: float = TEST_FRACTION,
                    log: Callable[[str], None] = print, progress: bool = True) -> PrepareReport:
    """Extract features and codes for every clip in `data_dir` into `cache_dir`; return what happened."""
    from tqdm import tqdm

    from ..features.offline import extract_video
    from ..model.conditioning import feature_settings

    clips, problems = find_clips(data_dir)
    report = PrepareReport(skipped=list(problems))
    fingerprint = codec_fingerprint(musicgen.codec)
    features = feature_settings(tracking_settings)   # edited [tracking] keys re-extract the clips
    min_frames = round(min_seconds * musicgen.frame_rate)
    bar = tqdm(clips, desc="prepare", unit="clip", disable=not progress)
    for clip in bar:
        bar.set_postfix_str(clip.name)
        stamp = _stamp(clip) | {"codec": fingerprint, "tracking": features}
        meta = read_meta(cache_dir, clip.name)
        if meta is not None and meta["source"] == stamp:
            try:
                cached = load_clip(cache_dir, clip.name)      # the arrays are all there and whole
                for source in sources_in(clip.video.parent):
                    load_external(cache_dir, cached, source)
            except DatasetError as err:
                log(f"rebuilding {clip.name}: {err}")
            else:
                if meta["caption"] != clip.caption:
                    set_caption(cache_dir, clip.name, clip.caption)
                report.reused.append((clip.name, meta["frames"]))
                continue
        try:
            audio = read_audio(clip.audio or clip.video, musicgen.sample_rate)
            frames = len(audio) // musicgen.codec.hop_length
            # tracking is the costly step: music too short for a clip skips it
            window = extract_video(clip.video, tracking_settings, calibrate=True) if frames >= min_frames else None
        except NoAudioTrack:
            report.skipped.append((clip.name, f"no music: no audio file ({', '.join(AUDIO_SUFFIXES)}) beside "
                                              f"{clip.video.name}, and it has no sound track"))
            continue
        except Exception as err:  # any unreadable input is reported, and the other clips still run
            report.skipped.append((clip.name, f"unreadable: {err}"))
            continue
        if window is not None:
            frames = min(window.n_frames, frames)
        if frames < min_frames:
            report.skipped.append((clip.name, f"too short: {frames / musicgen.frame_rate:.1f} s of video with music, "
                                              f"need {min_seconds:g} s"))
            continue
        face_fraction = float(np.mean(window.face[:frames, FACE_FOUND_COLUMN] > 0.5))
        if face_fraction < min_face_fraction:
            report.skipped.append((clip.name, f"no face: found in {100 * face_fraction:.0f}% of frames, "
                                              f"need {100 * min_face_fraction:.0f}%"))
            continue
        if not np.abs(audio[:frames * musicgen.codec.hop_length]).max() > SILENCE:
            log(f"warning: the music of {clip.name} ({(clip.audio or clip.video).name}) is silent: "
                f"the adaptor would learn silence for this performance; check the file")
        codes = musicgen.codec.encode(audio[None, :frames * musicgen.codec.hop_length])[0].cpu().numpy()  # (K, T)
        try:
            cache_external(cache_dir, clip.name, clip.video.parent, frames)   # before meta.json marks the clip whole
        except ValueError as err:
            report.skipped.append((clip.name, f"unreadable features: {err}"))
            continue
        report.prepared.append((clip.name, write_clip(cache_dir, clip.name, window, codes, clip.caption, stamp)))

    usable = sorted(report.prepared + report.reused)
    try:
        previous = read_index(cache_dir)
    except DatasetError:
        previous = None
    published = published_split(data_dir)
    try:
        if published is not None:
            test = sorted(name for name, _ in usable if name in published)
            log(f"test split from {Path(data_dir) / SPLIT_FILE}")
        else:
            test = choose_test_clips([name for name, _ in usable], test_fraction, previous) if usable else []
    except DatasetError as err:   # too few clips: training still works, and `evaluate` says why it has no test clips
        log(f"no test split: {err}")
        test = []
    if published is None and previous is not None and previous.get("test_fraction", test_fraction) != test_fraction:
        log("the test split is chosen anew (another --test-fraction): adaptors trained before it may have "
            "trained on its clips")
    write_index(cache_dir, {
        "version": CACHE_VERSION, "codec": fingerprint, "frame_rate": musicgen.frame_rate, "tracking": features,
        "clips": [{"name": name, "frames": frames} for name, frames in usable],
        "test_fraction": test_fraction if published is None else None, "test": test,
        "skipped": [{"name": name, "reason": reason} for name, reason in sorted(report.skipped)],
    })
    for name, reason in sorted(report.skipped):
        log(f"skipped {name}: {reason}")
    seconds = sum(frames for _, frames in usable) / musicgen.frame_rate
    log(f"{len(usable)} clips ready ({len(report.prepared)} new, {len(report.reused)} cached), "
        f"{seconds / 60:.1f} min of music; {len(test)} held out for testing; {len(report.skipped)} skipped; "
        f"cache: {cache_dir}")
    return report

"""`evaluate`: the paper's metrics (§4.4.1) of generated music against the clip's own music.

For each prepared clip (by default the test split `prepare` held out), music is
generated from its caption (and, with an adaptor, its visual features), decoded, and
compared with the reference music (the clip's EnCodec codes decoded by the same codec,
so codec artefacts do not count against the model). An adaptor is evaluated as it plays:
an adaptor trained on live windows renders each clip through the live engine offline
(`engine.offline`, as `generate --video` does) under the [generation] window settings it
was trained with; one trained on the paper's windows generates each piece in one pass
from its start, as the paper evaluates. Without an adaptor, the base model in one pass.

- tempo error: |BPM(generated) - BPM(reference)|, tempo from librosa's beat tracker;
- beat F1: mir_eval's F-measure of the generated beat times against the reference's
  (70 ms window).

With local models, `metrics.py` adds FAD and KL (against the real music files, not
re-decoded codes: FAD measures closeness to real music), IS, the CLAP score and the
video-music score, over the whole set.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json as write_json_file
from ..features.schema import FRAME_RATE, TimelineWindow
from ..model.conditioning import ChunkWindow, as_trained
from ..settings import GenerationSettings


@dataclass(frozen=True)
class RhythmScores:
    tempo_generated: float   # BPM
    tempo_reference: float   # BPM
    tempo_error: float       # |difference| in BPM
    beat_f1: float           # 0-1


def beat_times(audio: np.ndarray, sample_rate: int) -> tuple[float, np.ndarray]:
    """(tempo in BPM, beat times in seconds) from librosa's dynamic-programming beat tracker."""
    import librosa

    tempo, frames = librosa.beat.beat_track(y=audio.astype(np.float32), sr=sample_rate)
    return float(np.atleast_1d(tempo)[0]), librosa.frames_to_time(frames, sr=sample_rate)


def rhythm_scores(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> RhythmScores:
    import mir_eval

    tempo_gen, beats_gen = beat_times(generated, sample_rate)
    tempo_ref, beats_ref = beat_times(reference, sample_rate)
    f1 = mir_eval.beat.f_measure(beats_ref, beats_gen) if len(beats_ref) and len(beats_gen) else 0.0
    return RhythmScores(tempo_gen, tempo_ref, abs(tempo_gen - tempo_ref), float(f1))


@dataclass(frozen=True)
class ClipEvaluation:
    clip: str
    seconds: float
    caption: str             # the prompt the music was generated from
    scores: RhythmScores


def evaluate_clips(musicgen, clips, adaptor=None, seconds: float = 10.0, cfg: float = 3.0,
                   temperature: float = 1.0, top_k: int = 250, seed: int = 0,
                   default_caption: str = "music with catchy melody", captions: bool = True,
                   audio_out: str | os.PathLike | None = None, progress: bool = True,
                   on_audio: Callable[[ClipEvaluation, np.ndarray], None] | None = None,
                   generation=None) -> list[ClipEvaluation]:
    """Generate the first `seconds` of every clip (with the adaptor when given) and score its rhythm.

    `captions=False` prompts every clip with `default_caption` (the paper's "Generic").
    `on_audio(result, generated)` sees each clip's music, for the metrics over the whole set.
    `generation`: the [generation] settings a live-trained adaptor plays under (module docstring).
    """
    import torch
    from tqdm import tqdm

    results = []
    for clip in tqdm(clips, desc="evaluate", unit="clip", disable=not progress):
        n = min(clip.n_frames, round(seconds * musicgen.frame_rate))
        caption = (captions and clip.caption) or default_caption
        if adaptor is not None and adaptor.trained.get("windows") == "live":
            generated = render_as_played(musicgen, adaptor, clip, n, caption, generation, cfg, temperature, top_k,
                                         seed).audio
        else:
            if adaptor is not None:
                n = min(n, adaptor.config.max_frames)
            prefix = None
            if adaptor is not None:
                with torch.no_grad():
                    K = musicgen.decoder.config.num_codebooks     # the piece from its start: frame t at position t
                    prefix = adaptor.prefix(clip_features(clip, n), ChunkWindow(done=0, n=n, frames=n, first=0, K=K))
            text = musicgen.encode_text([caption])
            codes = musicgen.generate(text, n, cfg=cfg, temperature=temperature, top_k=top_k, seed=seed,
                                      adapters=prefix)
            generated = musicgen.decode_audio(codes)[0]
        reference_codes = torch.from_numpy(np.asarray(clip.codes[:, :n], dtype=np.int64))[None]
        reference = musicgen.decode_audio(reference_codes.to(musicgen.device))[0]
        if audio_out is not None:
            _write_wav(Path(audio_out) / f"{clip.name}.wav", generated, musicgen.sample_rate)
        results.append(ClipEvaluation(clip.name, n / musicgen.frame_rate, caption,
                                      rhythm_scores(generated, reference, musicgen.sample_rate)))
        if on_audio is not None:
            on_audio(results[-1], generated)
    return results


def clip_features(clip, n_frames: int) -> TimelineWindow:
    """A prepared clip's first `n_frames` of features as the engine reads a video's (t_end in seconds)."""
    return TimelineWindow(t_end=(n_frames - 1) / FRAME_RATE, face=np.asarray(clip.face[:n_frames]),
                          motion=np.asarray(clip.motion[:n_frames]), flow=np.asarray(clip.flow[:n_frames]))


def render_as_played(musicgen, adaptor, clip, n_frames: int, caption: str, generation, cfg: float,
                     temperature: float, top_k: int, seed: int):
    """`engine.offline.render_codes` of a clip's features under the window settings `adaptor` was trained
    with (the rest of `generation` as given), from `seed`: what `generate --video` plays for it."""
    from ..engine.musicgen_source import MusicGenSource
    from ..engine.offline import render_codes
    from ..engine.scheduler import ChunkTiming
    from ..engine.source import GenerationParams

    generation = dataclasses.replace(as_trained(generation or GenerationSettings(), adaptor.trained), seed=seed)
    source = MusicGenSource.from_settings(musicgen, adaptor, None, generation)
    params = GenerationParams(prompt=caption, cfg=cfg, temperature=temperature, top_k=top_k, top_p=0.0)
    return render_codes(source, clip_features(clip, clip.n_frames), params,
                        ChunkTiming.from_settings(generation, musicgen.sample_rate), n_frames)


def real_music(data_dir: str | os.PathLike, names: list[str], seconds: list[float],
               sample_rate: int) -> list[np.ndarray]:
    """The first `seconds` of each clip's music file (or video sound track), as FAD compares against."""
    from .dataset import DatasetError, find_clips
    from .prepare import read_audio

    sources = {clip.name: clip for clip in find_clips(data_dir)[0]}
    music = []
    for name, length in zip(names, seconds):
        if name not in sources:
            raise DatasetError(f"clip {name!r} is prepared but its folder is gone from {data_dir}: FAD and KL "
                               f"compare with the real music files")
        source = sources[name]
        music.append(read_audio(source.audio or source.video, sample_rate)[:round(length * sample_rate)])
    return music


def clip_videos(data_dir: str | os.PathLike, names: list[str]) -> list[Path]:
    """Each clip's video file, as the video-music score compares with."""
    from .dataset import DatasetError, find_clips

    sources = {clip.name: clip.video for clip in find_clips(data_dir)[0]}
    gone = [name for name in names if name not in sources]
    if gone:
        raise DatasetError(f"clip {gone[0]!r} is prepared but its folder is gone from {data_dir}: the video-music "
                           f"score reads the videos")
    return [sources[name] for name in names]


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile

    with atomic_path(path) as tmp:
        soundfile.write(tmp, audio, sample_rate, subtype="FLOAT")


def summary(results: list[ClipEvaluation], set_scores: dict | None = None) -> dict:
    """Means over clips, as the paper's Table 1 reports them, and the scores of the whole set (FAD, KL, CLAP)."""
    return {"clips": len(results),
            "tempo_error_bpm": float(np.mean([r.scores.tempo_error for r in results])),
            "beat_f1": float(np.mean([r.scores.beat_f1 for r in results])), **(set_scores or {})}


def format_table(results: list[ClipEvaluation], set_scores: dict | None = None) -> str:
    lines = [f"{'clip':<24} {'seconds':>7} {'BPM gen':>8} {'BPM ref':>8} {'tempo err':>9} {'beat F1':>7}"]
    for r in results:
        s = r.scores
        lines.append(f"{r.clip:<24} {r.seconds:>7.1f} {s.tempo_generated:>8.1f} {s.tempo_reference:>8.1f} "
                     f"{s.tempo_error:>9.1f} {s.beat_f1:>7.2f}")
    mean = summary(results)
    lines.append(f"{'mean':<24} {'':>7} {'':>8} {'':>8} {mean['tempo_error_bpm']:>9.1f} {mean['beat_f1']:>7.2f}")
    lines += [f"{SET_SCORES[key] + ' (whole set)':<24} {value:.3f}" for key, value in (set_scores or {}).items()]
    return "\n".join(lines)


SET_SCORES = {"fad": "FAD", "kl": "KL", "is": "IS", "clap": "CLAP score", "fad_vggish": "FAD-VGG",
              "kl_passt": "KL-PaSST", "video_music": "LanguageBind"}


def write_json(results: list[ClipEvaluation], path: str | os.PathLike, extra: dict,
               set_scores: dict | None = None) -> None:
    missing = [name for key, name in SET_SCORES.items() if key not in (set_scores or {})]
    data = {"summary": summary(results, set_scores), **extra,
            "clips": [{"clip": r.clip, "seconds": r.seconds, "caption": r.caption, **asdict(r.scores)}
                      for r in results],
            "not_computed": ", ".join(missing) + " (FAD, KL and IS need --classifier, CLAP --clap, FAD-VGG "
                            "--vggish, KL-PaSST --passt, LanguageBind --languagebind)"}
    write_json_file(path, data)

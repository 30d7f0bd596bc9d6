"""Building the live music source: MusicGen (adaptor, steering) when its weights are there, else the synth."""
from __future__ import annotations

import sys
from pathlib import Path

from ..engine.source import GenerationParams, MusicSource
from ..features.timeline import FeatureTimeline
from ..model.download import has_weights, missing_files
from ..settings import CHOICES, Settings, choices_text
from .session import SessionError


def warn_if_played_differently(trained: dict | None, settings: Settings) -> None:
    """One line on stderr naming the settings this session would feed an adaptor differently from its training
    (`trained`: its record; None: no adaptor)."""
    from ..model.conditioning import differences_warning, setting_differences

    if trained is None:
        return
    differences = setting_differences(trained, settings.generation, settings.tracking,
                                      windows=trained.get("windows") != "paper")
    if warning := differences_warning("this live session", differences):
        print(warning, file=sys.stderr, flush=True)


def build_source(settings: Settings) -> MusicSource:
    """MusicGen (with adaptor and steering) when weights exist, else the synth; `engine.kind` forces one.

    Loads everything heavy now, before any stream opens, and warms the model up.
    """
    kind, model, gen = settings.engine.kind, settings.model, settings.generation
    if kind not in CHOICES["engine.kind"]:
        raise SessionError(f"engine.kind must be one of {choices_text('engine.kind')}, got {kind!r}")
    if kind == "synth" or (kind == "auto" and not has_weights(model.dir)):
        from ..engine.synth import SynthSource

        return SynthSource(sample_rate=settings.audio.sample_rate, seed=max(gen.seed, 0))
    missing = missing_files(Path(model.dir))
    if missing and Path(model.dir).is_dir() and any(Path(model.dir).iterdir()):
        raise SessionError(f"{model.dir} is not a complete MusicGen folder: missing {', '.join(missing)}; "
                           f"run `expotion-live download small` again (it resumes) or pass --model DIR")
    if missing:
        raise SessionError(f"no MusicGen weights in {model.dir}: run `expotion-live download small` "
                           f"or pass --model DIR (or --engine synth)")
    if gen.context_seconds + max(gen.chunk_seconds, gen.first_chunk_seconds) + 0.2 > gen.window_seconds:
        raise SessionError(f"generation.window_seconds ({gen.window_seconds:g}) must exceed context_seconds "
                           f"({gen.context_seconds:g}) + chunk_seconds ({gen.chunk_seconds:g}) by 0.2 s: the stream "
                           f"slides to the last context_seconds and then needs room for a chunk")
    from ..engine.musicgen_source import MusicGenSource
    from ..engine.steering import PromptSteerer
    from ..model.generate import MusicGen

    import torch

    torch.set_num_threads(max(1, model.threads))     # the generator shares the CPU with tracking
    musicgen = MusicGen.load(model.dir, device=model.device, precision=model.precision)
    adaptor = None
    if model.adaptor:
        from ..model.adaptor import AdaptorError, load_adaptor

        adaptor = load_adaptor(model.adaptor, musicgen)
        warn_if_played_differently(adaptor.trained, settings)
    try:
        source = MusicGenSource.from_settings(musicgen, adaptor, PromptSteerer() if gen.steer_prompt else None, gen,
                                              name=f"MusicGen from {model.dir}")
    except AdaptorError as err:
        raise SessionError(f"{model.adaptor}: {err}") from None
    def frames(seconds: float) -> int:
        return round(seconds * musicgen.frame_rate)

    empty = FeatureTimeline(seconds=1.0).window(frames(gen.context_seconds + gen.chunk_seconds))   # no one yet
    source.warm_up(GenerationParams.from_settings(gen), empty, frames(gen.chunk_seconds))
    return source


def speed_notice(source: MusicSource) -> str:
    """One line when the source rendered slower than real time at warm-up (the music will loop while it
    catches up, `engine.scheduler`), naming what would help on this machine; "" when it keeps up."""
    rtf = getattr(source, "warm_up_rtf", None)
    if rtf is None or rtf >= 1.0:
        return ""
    musicgen = source.musicgen
    faster = {"fp32": "int8", "bf16": "int8", "int8": "int4"}.get(musicgen.precision)
    if musicgen.device.type == "cpu" and faster is not None:
        fix = f'[model] precision = "{faster}" renders faster'
    else:
        fix = "a smaller model or a faster machine keeps up"
    return (f"MusicGen renders {rtf:.2f}x real time on this machine ({musicgen.precision} on "
            f"{musicgen.device.type}): the music will loop while it catches up; {fix}")

"""`expotion-live generate`: a prompt (and optionally a video through a trained adaptor) to a WAV file.

    expotion-live generate --model checkpoints/musicgen-small --prompt "warm pads" --seconds 8 --out out.wav
    expotion-live generate --adaptor runs/me --video take.mp4 --video-out take_music.mp4 --out take.wav

With a video, the music is rendered by the live engine run offline (`engine.offline`):
chunk after chunk of one streamed generation, each conditioned on the video up to its own
moment, so a video of any length is conditioned all the way through. Flags that mirror
settings (`--model`, `--prompt`, `--cfg`, ...) override the settings file; every expected
failure is one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..atomic import atomic_path, check_output
from ..media import VIDEO_OUT_SUFFIXES, MediaError, ffmpeg, mux
from .common import add_device_flag, add_model_flags, flag, model_overrides, number

DEFAULT_SECONDS = 10.0  # without --video, the length of the piece


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate music from a text prompt (optionally a video through an adaptor) to a WAV file",
        description="Generate music offline with MusicGen; --adaptor and --video condition it on a "
                    "performance video of any length (the live engine, chunk by chunk), --video-out muxes "
                    "the music onto that video.")
    add_model_flags(p)
    p.add_argument("--seconds", type=number(float, 0.02, 3600), metavar="S",
                   help=f"length of the music (default: the video's length, else {DEFAULT_SECONDS:g})")
    p.add_argument("--out", metavar="WAV", default="out.wav", help="WAV file to write (default: out.wav)")
    p.add_argument("--codes-out", metavar="NPY", help="also save the generated codes, shape [4, frames]")
    p.add_argument("--greedy", action="store_true", help="take the most likely token (no sampling)")
    p.add_argument("--cfg", type=flag("generation.cfg"),
                   help="classifier-free guidance scale, 1 = off (settings: generation.cfg)")
    p.add_argument("--top-k", type=flag("generation.top_k"), help="sample among the k most likely tokens, 0 = all")
    p.add_argument("--top-p", type=flag("generation.top_p"), help="nucleus sampling mass, 0 = off")
    p.add_argument("--temperature", type=flag("generation.temperature"), help="sampling temperature")
    p.add_argument("--seed", type=flag("generation.seed"), help="random seed, -1 = fresh (settings: generation.seed)")
    add_device_flag(p)
    p.add_argument("--video", metavar="FILE", help="performance video whose face and motion condition the adaptor")
    p.add_argument("--video-out", metavar="MP4", help="write the video with the generated music as its sound")
    p.set_defaults(handler=run_generate)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    flags = {"model.device": args.device, "generation.cfg": args.cfg, "generation.top_k": args.top_k,
             "generation.top_p": args.top_p, "generation.temperature": args.temperature,
             "generation.seed": args.seed}
    return {**model_overrides(args), **{key: value for key, value in flags.items() if value is not None}}


def run_generate(args: argparse.Namespace, settings) -> int:
    """Handler: load, generate with a progress bar, write WAV (+ codes, + muxed video)."""
    from ..capture.sources import CaptureError
    from ..settings import override

    settings = override(settings, _overrides(args))
    try:
        return _generate(args, settings)
    except (ValueError, OSError, CaptureError, MediaError) as err:  # incl. CheckpointError, AdaptorError
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1


def _generate(args: argparse.Namespace, settings) -> int:
    import numpy as np
    import soundfile as sf

    from ..capture.sources import video_problem
    from ..model.generate import MusicGen

    model_cfg = settings.model
    if args.adaptor and not args.video:
        raise ValueError("--adaptor needs --video (the performance whose face and motion steer the music)")
    if args.video and not model_cfg.adaptor:
        raise ValueError("--video needs --adaptor (a trained condition adaptor) to steer the music")
    if args.video_out and not args.video:
        raise ValueError("--video-out needs --video (the video to put the music on)")
    if args.video_out:
        ffmpeg()                                   # missing: say so before the model loads
    if args.video and (problem := video_problem(Path(args.video))):
        raise ValueError(problem)
    check_output(args.out, (".wav",), "--out")
    if args.codes_out:
        check_output(args.codes_out, (".npy",), "--codes-out")
    if args.video_out:
        check_output(args.video_out, VIDEO_OUT_SUFFIXES, "--video-out")

    musicgen = MusicGen.load(model_cfg.dir, device=model_cfg.device, precision=model_cfg.precision)
    codes, audio = (_from_video if args.video else _from_prompt)(args, settings, musicgen)
    if not np.isfinite(audio).all():
        raise ValueError(f"the generated audio holds NaN or infinite samples; {args.out} was not written")
    with atomic_path(args.out) as tmp:
        sf.write(tmp, audio, musicgen.sample_rate, subtype="FLOAT", format="WAV")
    if args.codes_out:
        with atomic_path(args.codes_out) as tmp:
            np.save(tmp, codes[0].cpu().numpy())  # [4, frames]
    if args.video_out:
        mux(args.video, args.out, args.video_out)
    where = f" and {args.video_out}" if args.video_out else ""
    print(f"wrote {len(audio) / musicgen.sample_rate:.2f} s of music to {args.out}{where}", file=sys.stderr)
    return 0


def _from_prompt(args: argparse.Namespace, settings, musicgen):
    """(codes (1, K, n), audio): one piece from the prompt alone, at most the model's positions long."""
    from tqdm import tqdm

    gen = settings.generation
    seconds = args.seconds if args.seconds is not None else DEFAULT_SECONDS
    n_frames = round(seconds * musicgen.frame_rate)
    longest = musicgen.decoder.config.max_position_embeddings - musicgen.decoder.config.num_codebooks
    if not 1 <= n_frames <= longest:
        raise ValueError(f"--seconds {seconds:g} is out of range: this model makes "
                         f"{1 / musicgen.frame_rate:g} to {longest / musicgen.frame_rate:g} s in one piece "
                         f"(a --video of any length is rendered chunk by chunk)")
    text = musicgen.encode_text([gen.prompt])
    with tqdm(unit="step", desc="generating", file=sys.stderr) as bar:
        codes = musicgen.generate(text, n_frames, cfg=gen.cfg, temperature=gen.temperature, top_k=gen.top_k,
                                  top_p=gen.top_p, greedy=args.greedy, seed=None if gen.seed < 0 else gen.seed,
                                  progress=_bar_progress(bar))
    return codes, musicgen.decode_audio(codes)[0]


def _from_video(args: argparse.Namespace, settings, musicgen):
    """(codes (1, K, n), audio): the video's length (or --seconds) rendered by the live engine offline,
    conditioned on the video's face and motion through the adaptor all the way through."""
    from tqdm import tqdm

    from ..features.offline import extract_video
    from ..model.adaptor import load_adaptor
    from ..model.conditioning import differences_warning, setting_differences
    from ..engine import offline
    from ..engine.musicgen_source import MusicGenSource
    from ..engine.scheduler import ChunkTiming
    from ..engine.source import GenerationParams

    gen = settings.generation
    adaptor = load_adaptor(settings.model.adaptor, musicgen).eval()
    for line in filter(None, [differences_warning("generate", setting_differences(
            adaptor.trained, gen, settings.tracking, windows=adaptor.trained.get("windows") != "paper"))]):
        print(line, file=sys.stderr)
    with tqdm(unit="frame", desc="tracking", file=sys.stderr) as bar:
        features = extract_video(args.video, settings.tracking, progress=_bar_progress(bar),
                                 calibrate=settings.tracking.calibrate_at_start)   # as `run` and `prepare` track it
    n_frames = round(args.seconds * musicgen.frame_rate) if args.seconds is not None else features.n_frames
    params = GenerationParams.from_settings(gen)
    if args.greedy:           # the most likely token: the only one left to draw from
        params = dataclasses.replace(params, top_k=1, top_p=0.0)
    source = MusicGenSource.from_settings(musicgen, adaptor, None, gen)
    timing = ChunkTiming.from_settings(gen, musicgen.sample_rate)
    with tqdm(total=n_frames, unit="frame", desc="generating", file=sys.stderr) as bar:
        rendered = offline.render_codes(source, features, params, timing, n_frames,
                                        lambda request: bar.update(min(request.n_frames, n_frames - bar.n)))
    return rendered.codes, rendered.audio


def _bar_progress(bar):
    """A `progress(done, total)` callback that moves a tqdm bar."""
    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress

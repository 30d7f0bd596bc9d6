"""The `prepare`, `train` and `evaluate` subcommands: a performer's recordings to a trained adaptor.

Defaults are the paper's / the authors' recipe (docs/training.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..features.external import TRACKER, check_source
from ..features.schema import INPUTS
from ..model.conditioning import LIVE_LOOK_AHEAD, LIVE_LOOK_BACK
from ..settings import Settings
from .common import add_device_flag, fail, flag, number
from ..train.config import TrainConfig
from ..train.prepare import TEST_FRACTION

_T = TrainConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="extract features and EnCodec codes of a dataset folder into its training cache",
        description="Scan DATA (one folder per clip: a video, optionally the music as a separate audio file "
                    "and a caption.txt), track every video with the live app's tracker, encode the music "
                    "with the model's EnCodec, and cache both in DATA/.expotion_cache. Unusable clips are "
                    "skipped and listed; running it again only does new or changed clips.")
    p.add_argument("data", help="dataset folder (see docs/training.md)")
    _model_flags(p)
    p.add_argument("--min-seconds", type=number(float, 0.1, 3600), default=_T.segment_seconds,
                   help="skip clips shorter than this (default: %(default)s, the training segment length)")
    p.add_argument("--min-face", type=number(float, 0.0, 1.0), default=0.5,
                   help="skip clips with a face in fewer than this share of frames (default: %(default)s)")
    p.add_argument("--test-fraction", type=number(float, 0.0, 0.99), default=TEST_FRACTION,
                   help="share of clips held out as the test split, never trained on (default: %(default)s)")
    p.set_defaults(handler=_prepare)

    p = subparsers.add_parser(
        "train", help="train the Expotion adaptor on prepared clips (MusicGen stays frozen)",
        description="PEFT training of the condition adaptor. Resumable: run the same command again after "
                    "a stop or a crash. Multi-GPU: torchrun --nproc_per_node=N -m expotion_live.cli train ...")
    p.add_argument("data", help="dataset folder prepared with `expotion-live prepare`")
    _model_flags(p)
    p.add_argument("--out", required=True, help="run folder: adaptor checkpoints, best/, curves.png, resume state")
    p.add_argument("--epochs", type=number(int, 1, 100_000), default=_T.epochs, help="default: %(default)s")
    p.add_argument("--batch-size", type=number(int, 1, 4096), default=_T.batch_size,
                   help="segments per step per process (default: %(default)s)")
    p.add_argument("--lr", type=number(float, 1e-8, 10.0), default=_T.lr,
                   help="AdamW peak learning rate (default: %(default)s)")
    p.add_argument("--min-lr", type=number(float, 0.0, 10.0), default=_T.min_lr,
                   help="end of the cosine (default: %(default)s)")
    p.add_argument("--weight-decay", type=number(float, 0.0, 10.0), default=_T.weight_decay,
                   help="default: %(default)s")
    p.add_argument("--warmup-epochs", type=number(float, 0.0, 100_000), default=_T.warmup_epochs,
                   help="default: %(default)s")
    p.add_argument("--grad-clip", type=number(float, 0.0, 1e6), default=_T.grad_clip,
                   help="gradient-norm clip (default: %(default)s)")
    p.add_argument("--segment-seconds", type=number(float, 0.1, 30.0), default=_T.segment_seconds,
                   help="training piece length (default: %(default)s)")
    p.add_argument("--paper-windows", action="store_true",
                   help="train on whole pieces with the video aligned to the codes (the paper) instead of the "
                        "windows live generation gives the adaptor, chunk by chunk as the [generation] settings "
                        "make them (the default: pieces must hold window_seconds)")
    p.add_argument("--val-fraction", type=number(float, 0.0, 0.99), default=_T.val_fraction,
                   help="share of the non-test clips held out for validation, which picks best/ "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=_T.seed,
                   help="split, initialisation, data order (default: %(default)s)")
    p.add_argument("--save-every", type=number(int, 0, 10**9), default=_T.save_every,
                   help="steps between resumable checkpoints within an epoch; 0 = only at epoch ends (default: %(default)s)")
    p.add_argument("--no-amp", action="store_true", help="CUDA: train in fp32 instead of fp16 autocast")
    p.add_argument("--default-caption", default=_T.default_caption,
                   help="caption for clips without caption.txt (default: %(default)r)")
    p.add_argument("--layers", type=number(int, 1, 1000), default=None,
                   help="adapt only the last N decoder layers (default: all, as the authors did)")
    p.add_argument("--rank", type=number(int, 1, 1024), default=12,
                   help="low-rank size d1 = d2 of face and motion (default: 12)")
    p.add_argument("--no-flow-cnn", action="store_true", help="leave out the optical-flow CNN (pose only)")
    p.add_argument("--inputs", choices=INPUTS, default=INPUTS[0],
                   help="ablation (paper Table 1): condition on the face, the motion (pose and flow) or both "
                        "(default: %(default)s); stored in the adaptor, so evaluate and live use the same")
    p.add_argument("--no-captions", action="store_true",
                   help="ablation (paper Table 1, 'Generic'): train every clip on --default-caption instead of "
                        "its caption.txt; stored in the adaptor, so evaluate does the same")
    p.add_argument("--text-dropout", type=number(float, 0.0, 1.0), default=_T.text_dropout,
                   help="condition dropout: the share of pieces trained on guidance's null text, so the adaptor "
                        "is trained for both halves of CFG (default: %(default)s, audiocraft's)")
    p.add_argument("--face-source", type=_source, default=TRACKER, metavar="SOURCE",
                   help="face features from the tracker (default) or from each clip's SOURCE.features.npz, "
                        "e.g. the paper's MARLIN (docs/training.md); such an adaptor cannot play live")
    p.add_argument("--motion-source", type=_source, default=TRACKER, metavar="SOURCE",
                   help="motion features from the tracker's pose and flow (default) or from each clip's "
                        "SOURCE.features.npz, e.g. the authors' 'raft' or 'synchformer' (replaces pose and flow)")
    p.add_argument("--look-ahead", type=_look_ahead, default=LIVE_LOOK_AHEAD, metavar="FRAMES|unlimited",
                   help="frames of video after its own moment a code may attend to (default: %(default)s, as live "
                        "generation has none; 'unlimited' is the paper's, for offline use); stored in the adaptor")
    p.add_argument("--look-back", type=_look_ahead, default=LIVE_LOOK_BACK, metavar="FRAMES|unlimited",
                   help="frames of video before its own moment a code may attend to (default: %(default)s, so a "
                        "movement that stops is let go; 'unlimited' is the paper's); stored in the adaptor")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser(
        "evaluate", help="tempo error and beat F1 of generated vs reference music on prepared clips",
        description="Generate music for each prepared clip (with --adaptor: from its video features too) and "
                    "score its rhythm against the clip's music: tempo error (BPM) and beat F1, the paper's "
                    "rhythm metrics. FAD, KL, IS, CLAP and the paper's FAD-VGG, KL-PaSST and LanguageBind "
                    "scores come from local model files (the flags below); nothing is downloaded.")
    p.add_argument("data", help="dataset folder prepared with `expotion-live prepare`")
    _model_flags(p)
    p.add_argument("--adaptor", help="adaptor checkpoint folder (e.g. RUN/best); without it, the text-only base")
    p.add_argument("--split", choices=("test", "val", "all"), default="test",
                   help="the test clips `prepare` held out; the validation clips of `train` with the same "
                        "--val-fraction and --seed; or all (default: %(default)s)")
    p.add_argument("--val-fraction", type=number(float, 0.0, 0.99), default=_T.val_fraction, help="as given to train")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=_T.seed,
                   help="as given to train; also the sampling seed")
    p.add_argument("--seconds", type=number(float, 0.1, 600), default=_T.segment_seconds,
                   help="music per clip (default: %(default)s)")
    p.add_argument("--cfg", type=flag("generation.cfg"), help="classifier-free guidance (settings: generation.cfg)")
    p.add_argument("--temperature", type=flag("generation.temperature"), help="settings: generation.temperature")
    p.add_argument("--top-k", type=flag("generation.top_k"), help="settings: generation.top_k")
    p.add_argument("--default-caption", default=_T.default_caption,
                   help="for clips without caption.txt, and for every clip under --no-captions")
    p.add_argument("--no-captions", action="store_true",
                   help="the text-only base on --default-caption for every clip (an adaptor brings its own choice)")
    p.add_argument("--classifier", metavar="DIR",
                   help="FAD and KL against the clips' real music: a local Audio Spectrogram Transformer folder "
                        "(e.g. MIT/ast-finetuned-audioset-10-10-0.4593 saved with save_pretrained)")
    p.add_argument("--clap", metavar="DIR", help="CLAP text-audio score: a local CLAP folder "
                                                  "(e.g. laion/clap-htsat-unfused saved with save_pretrained)")
    p.add_argument("--vggish", metavar="FILE", help="the paper's FAD-VGG: torchvggish's weights file "
                                                    "(vggish-10086976.pth)")
    p.add_argument("--passt", metavar="FILE", help="the paper's KL on PaSST: hear21passt's weights file "
                                                   "(passt-s-f128-p16-s10-ap.476-swa.pt; needs hear21passt installed)")
    p.add_argument("--languagebind", metavar="DIR", help="video-music score: a folder with LanguageBind's video/ "
                                                         "and audio/ models (needs the languagebind package)")
    p.add_argument("--json", metavar="FILE", help="also write per-clip and mean scores as JSON")
    p.add_argument("--audio-out", metavar="DIR", help="also write each generated clip as a WAV")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser(
        "report", help="several `evaluate --json` files as one table in the paper's layout (markdown and PNG)",
        description="One row per evaluated configuration (inputs, caption or generic prompt), the paper's "
                    "Table 1 columns that any run computed (FAD-VGG, KL-PaSST, FAD, KL, IS, tempo error, beat F1, "
                    "CLAP, LanguageBind). The runs must have scored the same clips.")
    p.add_argument("runs", nargs="+", metavar="JSON", help="files written by `expotion-live evaluate --json`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for table.md and table.png")
    p.set_defaults(handler=_report)


def _source(text: str) -> str:
    try:
        return check_source(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _look_ahead(text: str) -> int | None:
    """--look-ahead and --look-back: 'unlimited' (None) or a whole number of 50 Hz frames."""
    return None if text == "unlimited" else number(int, 0, 100_000)(text)


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="MusicGen directory, transformers format (settings: model.dir)")
    add_device_flag(p)


def _settings(args, settings: Settings) -> Settings:
    from ..settings import override

    flags = {"model.dir": args.model, "model.device": args.device}
    for name in ("cfg", "temperature", "top_k"):
        if getattr(args, name, None) is not None:
            flags[f"generation.{name}"] = getattr(args, name)
    return override(settings, {k: v for k, v in flags.items() if v is not None})


def _load_musicgen(settings: Settings, device: str | None = None, precision: str | None = None):
    from ..model.generate import MusicGen

    return MusicGen.load(settings.model.dir, device=device or settings.model.device,
                         precision=precision or settings.model.precision)


def _prepare(args, settings: Settings) -> int:
    from ..train.dataset import DatasetError, cache_dir_for
    from ..train.prepare import prepare_dataset

    try:
        settings = _settings(args, settings)
        musicgen = _load_musicgen(settings, precision="fp32")
        report = prepare_dataset(args.data, musicgen, settings.tracking, cache_dir_for(args.data),
                                 min_seconds=args.min_seconds, min_face_fraction=args.min_face,
                                 test_fraction=args.test_fraction)
    except (DatasetError, ValueError, OSError) as err:   # incl. CheckpointError
        return fail(str(err))
    if not report.prepared and not report.reused:
        return fail(f"no usable clips in {args.data}; see the reasons above and docs/training.md")
    return 0


def _train_device(settings: Settings) -> str:
    """torchrun gives each process its GPU through LOCAL_RANK."""
    import torch

    device = settings.model.device
    if device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def _train(args, settings: Settings) -> int:
    from ..model.adaptor import AdaptorConfig, AdaptorError
    from ..train.dataset import DatasetError, cache_dir_for, load_clip, read_index, split_clips
    from ..train.prepare import training_clips
    from ..train.sources import clip_for, source_width
    from ..train.trainer import Trainer, TrainingError

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, grad_clip=args.grad_clip,
        segment_seconds=args.segment_seconds, val_fraction=args.val_fraction, seed=args.seed,
        save_every=args.save_every, amp=not args.no_amp, default_caption=args.default_caption,
        live_windows=not args.paper_windows, text_dropout=args.text_dropout)
    trainer = None
    try:
        settings = _settings(args, settings)
        cache = cache_dir_for(args.data)
        index = read_index(cache)
        train_names, val_names = split_clips(training_clips(index), config.val_fraction, config.seed)
        clips = {name: load_clip(cache, name) for name in train_names + val_names}
        widths = {key: source_width(cache, list(clips.values()), source)     # the input sizes follow the source
                  for key, source in (("face_dim", args.face_source), ("motion_dim", args.motion_source))
                  if source != TRACKER}
        adaptor_config = AdaptorConfig(d1=args.rank, d2=args.rank, n_layers=args.layers,
                                       flow_cnn=not args.no_flow_cnn and args.motion_source == TRACKER,
                                       inputs=args.inputs, captions=not args.no_captions, look_ahead=args.look_ahead,
                                       look_back=args.look_back,
                                       face_source=args.face_source, motion_source=args.motion_source, **widths)
        musicgen = _load_musicgen(settings, device=_train_device(settings), precision="fp32")
        from ..train.prepare import codec_fingerprint

        if index["codec"] != codec_fingerprint(musicgen.codec):
            return fail(f"{cache} was prepared with another model's codec; run prepare again with --model "
                         f"{settings.model.dir}")
        trainer = Trainer(musicgen, [clip_for(adaptor_config, cache, clips[n]) for n in train_names],
                          [clip_for(adaptor_config, cache, clips[n]) for n in val_names],
                          args.out, config, adaptor_config, device=musicgen.device, progress=not args.quiet,
                          generation=settings.generation, features=index.get("tracking"))
        print(f"{len(train_names)} training clips, {len(val_names)} validation clips "
              f"({len(index['test'])} test clips held out), "
              f"{trainer.steps_per_epoch} steps per epoch", flush=True)
        result = trainer.run()
    except (DatasetError, TrainingError, AdaptorError, ValueError, OSError) as err:
        return fail(str(err))
    finally:
        trainer = None   # DDP's Reducer goes first: see _leave_process_group
        _leave_process_group()
    if result.interrupted:
        return 130
    best = Path(args.out) / "best"
    chosen = (f", {best} (lowest validation loss)" if best.is_dir() else
              " (no validation clips, so no best/: --val-fraction holds some out when there are enough)")
    print(f"adaptor: {Path(args.out)} (latest){chosen}; curves: {Path(args.out) / 'curves.png'}")
    return 0


def _leave_process_group() -> None:
    """Destroy the torchrun process group, after every DDP wrapper is gone.

    DDP's Reducer holds the gloo group; if it is the last holder, its destructor joins
    gloo's worker threads while holding the GIL, and a worker still releasing a finished
    all-reduce waits for that GIL: a deadlock at exit (seen under load). Collected first,
    the Reducer only drops a reference, and `destroy_process_group` releases the GIL to join.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def _evaluate(args, settings: Settings) -> int:
    from ..model.adaptor import AdaptorError, load_adaptor
    from ..train.dataset import DatasetError, cache_dir_for, load_clip, read_index, split_clips
    from ..train.evaluate import clip_videos, evaluate_clips, format_table, real_music, write_json
    from ..train.metrics import AudioClassifier, Clap, LanguageBind, Passt, VGGish, audio_metrics
    from ..train.prepare import test_clips, training_clips
    from ..train.sources import clip_for
    from ..train.trainer import seen_clips

    try:
        settings = _settings(args, settings)
        cache = cache_dir_for(args.data)
        index = read_index(cache)
        if args.split == "test":
            names = test_clips(index)
        elif args.split == "val":
            names = split_clips(training_clips(index), args.val_fraction, args.seed)[1]
        else:
            names = [c["name"] for c in index["clips"]]
        if not names:
            return fail(f"no {args.split} clips in {cache}: prepare with a --test-fraction above 0 (or more clips), "
                         f"or use --split all")
        musicgen = _load_musicgen(settings)
        adaptor = load_adaptor(args.adaptor, musicgen) if args.adaptor else None
        if adaptor is not None and args.split == "test":
            seen = sorted(seen_clips(args.adaptor) & set(names))
            if seen:
                return fail(f"{args.adaptor} was trained or validated on {len(seen)} of the test clips "
                             f"({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}): the test split was chosen "
                             f"anew after it was trained; train again on the prepared data as it is now")
        if adaptor is not None and args.no_captions:
            return fail(f"--no-captions is for the base model: {args.adaptor} is evaluated as it was trained "
                         f"({'with' if adaptor.config.captions else 'without'} captions, from its adaptor.json)")
        captions = adaptor.config.captions if adaptor is not None else not args.no_captions
        if adaptor is not None and "tracking" in index:    # the clips' features against the adaptor's
            from ..model.conditioning import differences_warning

            trained = adaptor.trained.get("tracking", {})
            differences = [f"tracking.{key} (trained {trained[key]!r}, test clips prepared with {value!r})"
                           for key, value in index["tracking"].items() if key in trained and trained[key] != value]
            if warning := differences_warning("evaluate", differences):
                print(warning, file=sys.stderr)
        classifier = AudioClassifier(args.classifier, musicgen.device) if args.classifier else None
        clap = Clap(args.clap, musicgen.device) if args.clap else None
        vggish = VGGish(args.vggish, musicgen.device) if args.vggish else None
        passt = Passt(args.passt, musicgen.device) if args.passt else None
        languagebind = LanguageBind(args.languagebind, musicgen.device) if args.languagebind else None
        generated = []
        keep = any(m is not None for m in (classifier, clap, vggish, passt, languagebind))
        gen = settings.generation
        clips = [load_clip(cache, n) for n in names]
        if adaptor is not None:
            clips = [clip_for(adaptor.config, cache, clip) for clip in clips]
        results = evaluate_clips(musicgen, clips, adaptor, seconds=args.seconds,
                                 cfg=gen.cfg, temperature=gen.temperature, top_k=gen.top_k, seed=args.seed,
                                 default_caption=args.default_caption, captions=captions,
                                 audio_out=args.audio_out, progress=not args.quiet,
                                 on_audio=(lambda result, audio: generated.append(audio)) if keep else None,
                                 generation=gen)
        set_scores = {}
        if keep:
            needs_music = any(m is not None for m in (classifier, vggish, passt))
            music = real_music(args.data, [r.clip for r in results], [r.seconds for r in results],
                               musicgen.sample_rate) if needs_music else []
            videos = clip_videos(args.data, [r.clip for r in results]) if languagebind is not None else None
            set_scores = audio_metrics(generated, music, [r.caption for r in results], musicgen.sample_rate,
                                       classifier, clap, vggish, passt, languagebind, videos)
    except (DatasetError, AdaptorError, ValueError, OSError) as err:   # incl. TrainingError, MetricsError
        return fail(str(err))
    print(format_table(results, set_scores))
    if args.json:
        configuration = {"inputs": adaptor.config.inputs if adaptor is not None else None, "captions": captions}
        write_json(results, args.json, {"adaptor": args.adaptor, "model": settings.model.dir, "split": args.split,
                                        "configuration": configuration}, set_scores)
    return 0


def _report(args, settings: Settings) -> int:
    from ..train.report import ReportError, write_report

    try:
        md, png = write_report(args.runs, args.out)
    except (ReportError, OSError) as err:
        return fail(str(err))
    print(md.read_text(encoding="utf-8"), end="")
    print(f"table: {md}, {png}")
    return 0

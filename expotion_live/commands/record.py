"""`record`: training takes, a track played while the camera films the performer (`..train.record`)."""
from __future__ import annotations

import argparse

from .. import settings as settings_mod
from ..settings import Settings
from ..train.record import CLIP_SECONDS, RecordError, record_session
from .common import fail, number


def add_parser(subparsers) -> None:
    """`expotion-live record --music TRACK --out DATA [--camera SPEC] [--seconds S] ...`."""
    record = subparsers.add_parser(
        "record", help="record training takes: play a track, film the performer, save clips for `prepare`",
        description="Plays TRACK while recording the camera and saves the pair as clips in DATA "
                    "(one folder per clip: take.mp4, music.wav, caption.txt), ready for `prepare`.")
    record.add_argument("--music", required=True, metavar="TRACK", help="the music to move to (WAV, FLAC, OGG)")
    record.add_argument("--out", required=True, metavar="DATA", help="dataset folder the clips go into")
    record.add_argument("--camera", metavar="SPEC", help="camera index, name or video file (default: [camera] source)")
    record.add_argument("--seconds", type=number(float, 0.1, 24 * 3600), metavar="S",
                        help="record only the first S seconds of the track")
    record.add_argument("--clip-seconds", type=number(float, 1.0, 3600), default=CLIP_SECONDS, metavar="S",
                        help=f"length of each saved clip (default: {CLIP_SECONDS:g} s, as in the paper)")
    record.add_argument("--caption", default="", help="text description of the music, saved as caption.txt")
    record.add_argument("--audio-output", metavar="NAME", help="audio output device name (default: [audio] device)")
    record.add_argument("--device", help=argparse.SUPPRESS)   # the old spelling: a clear error, below
    record.add_argument("--file-sink", action="store_true",
                        help="no sound card: pace playback by the clock without playing it")
    record.set_defaults(handler=run_record)


def run_record(args: argparse.Namespace, settings: Settings) -> int:
    if args.device is not None:
        return fail("the sound card is --audio-output NAME (--device names the compute device, as for generate "
                    "and run)")
    if args.audio_output is not None:
        settings = settings_mod.override(settings, {"audio.device": args.audio_output})
    try:
        clips = record_session(args.music, args.out, settings, camera=args.camera, seconds=args.seconds,
                               clip_seconds=args.clip_seconds, caption=args.caption,
                               file_sink=args.file_sink, progress=print)
    except RecordError as err:
        return fail(str(err))
    if not clips:
        return fail("no clip was long enough to keep (the camera stopped early)")
    print(f"{len(clips)} clips in {args.out}; next: expotion-live prepare {args.out}")
    return 0

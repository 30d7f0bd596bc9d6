"""`import`: the paper's dataset (human-music-moves) into clip folders for `prepare` (`..train.importer`)."""
from __future__ import annotations

from ..train.dataset import DatasetError
from ..train.importer import PUBLISHED_RATE, REPO, download_dataset, import_dataset
from ..train.prepare import SPLIT_FILE
from .common import fail, number


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="the paper's dataset (human-music-moves) into clip folders for prepare",
        description=f"Make clip folders (video, music, the authors' caption, optionally their features) in DST "
                    f"from a local copy SRC of {REPO}, keeping the authors' train/test split (train.lst, "
                    f"test.lst) as DST/{SPLIT_FILE}. See docs/training.md, 'Reproducing the paper'.")
    p.add_argument("dataset", choices=("human-music-moves",))
    p.add_argument("src", help="local copy of the dataset (with --download: where it goes)")
    p.add_argument("dst", help="dataset folder to write, for `expotion-live prepare`")
    p.add_argument("--lists", metavar="DIR", help="folder with the authors' train.lst and test.lst (default: SRC)")
    p.add_argument("--features", action="append", default=[], metavar="SOURCE=DIR",
                   help="the authors' features of each clip (<clip>.pt) in DIR, stored as SOURCE "
                        "(e.g. raft=raft_5fps); repeatable")
    p.add_argument("--features-rate", type=number(float, 0.01, 10_000), default=PUBLISHED_RATE,
                   help="their steps per second (default: %(default)s, as published)")
    p.add_argument("--download", action="store_true", help=f"first download {REPO} into SRC (resumable)")
    p.set_defaults(handler=_import)


def _import(args, settings=None) -> int:
    from ..model.download import DownloadError

    try:
        dirs = dict(item.split("=", 1) for item in args.features)
    except ValueError:
        return fail(f"--features takes SOURCE=DIR, got {args.features}")
    try:
        if args.download:
            download_dataset(args.src)
        import_dataset(args.src, args.dst, args.lists, dirs, args.features_rate)
    except (DownloadError, DatasetError, ValueError, OSError) as err:
        return fail(str(err))
    return 0

"""`download`: MusicGen weights from the Hugging Face hub into a checkpoints folder (`..model.download`)."""
from __future__ import annotations

import argparse
import sys

from ..model.download import SIZES, DownloadError, download_musicgen


def add_parser(subparsers) -> None:
    """`expotion-live download {small,medium,large} [--dir checkpoints/]`."""
    parser = subparsers.add_parser(
        "download", help="download MusicGen weights from the Hugging Face hub (resumable)",
        description="Download facebook/musicgen-SIZE into DIR/musicgen-SIZE; run it again to resume.")
    parser.add_argument("size", choices=SIZES,
                        help="model size (safetensors: small 2.4 GB, medium 6 GB, large 13 GB)")
    parser.add_argument("--dir", default="checkpoints", help="parent folder (default: checkpoints/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_download)


def run_download(args: argparse.Namespace, settings=None) -> int:
    """Handler: download, then say which `[model] dir` to use; errors are one line on stderr."""
    try:
        folder = download_musicgen(args.size, args.dir, progress=not args.quiet)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"MusicGen {args.size} is in {folder}; use it with --model {folder} "
          f"or [model] dir = \"{folder}\" in the settings file")
    return 0

"""Atomic file writes: checkpoints, recordings and settings are never left half written.

A crash, a kill or a full disk while writing leaves the previous file intact and no
stray temporary file behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class AtomicFile:
    """A temporary file beside `path` that becomes `path` on `commit()` or vanishes on `abort()`.

    For writers that outlive one block (a recorder, an encoder); `atomic_path` is the
    `with` form. The temporary name keeps the suffix so libraries that pick a format by
    extension (soundfile, safetensors, OpenCV, ffmpeg) write the right thing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.",
                                        suffix=f".tmp{self.path.suffix}")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600; the file gets the usual permissions
        self.tmp = Path(tmp_name)

    def commit(self) -> Path:
        """fsync the temporary file and rename it over `path` (on failure it is removed)."""
        try:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; `path` is left as it was."""
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    file = AtomicFile(path)
    try:
        yield file.tmp
    except BaseException:
        file.abort()
        raise
    file.commit()

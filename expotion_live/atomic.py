"""Atomic file writes: checkpoints, recordings and settings are never left half written.

A crash, a kill or a full disk while writing leaves the previous file intact. A temporary
file is locked (flock) while it is being written; one a killed process left behind is
unlocked, and the next write into the same folder removes it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


# Below this much free space a failed write is taken as a full disk: libsndfile ("System error.")
# and safetensors report ENOSPC without its errno.
LOW_SPACE_BYTES = 1 << 20
# `.{stem}.{mkstemp's 8 characters}.tmp{suffix}`: the names AtomicFile gives its temporary files.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


class DiskFullError(OSError):
    """A write failed for lack of space; the message says "disk full" and which file."""


def disk_full(err: Exception, path: str | os.PathLike) -> DiskFullError | None:
    """`err`, raised writing `path`, as a DiskFullError naming the file; None if the disk is not full."""
    if isinstance(err, DiskFullError):
        return err
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and (free is None or free >= LOW_SPACE_BYTES):
        return None
    left = "" if free is None else f" ({free // 1024} KiB free in {folder})"
    return DiskFullError(f"disk full: cannot write {path}{left}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Errors raised inside, while writing `path`, become a DiskFullError naming it when the disk is full."""
    try:
        yield
    except Exception as err:
        if (full := disk_full(err, path)) is None:
            raise
        raise full from err


class OutputPathError(ValueError):
    """An output path no writer could use; the message names the flag and what to pass instead."""


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...], flag: str) -> Path:
    """`path` if a file of one of `suffixes` can be written there; checked before any work is done."""
    path = Path(path)
    kinds = " or ".join(suffixes)
    if path.is_dir() or str(path).endswith(os.sep):
        raise OutputPathError(f"{flag} {path} is a folder; name a {kinds} file in it")
    if path.suffix.lower() not in suffixes:
        raise OutputPathError(f"{flag} {path}: this writes {kinds} files only; name the file *{suffixes[0]}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent           # missing folders are made when the file is written
    if not folder.is_dir():
        raise OutputPathError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: no permission to write in {folder}")
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of killed writers in `folder` (ours by name, and unlocked)."""
    removed = []
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)]
    except OSError:
        return removed
    for name in filter(_TEMP_NAME.match, names):
        path = Path(folder) / name
        try:
            with open(path, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)   # held: a live writer's file
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


class AtomicFile:
    """A temporary file beside `path` that becomes `path` on `commit()` or vanishes on `abort()`.

    For writers that outlive one block (a recorder, an encoder); `atomic_path` is the
    `with` form. The temporary name keeps the suffix so libraries that pick a format by
    extension (soundfile, safetensors, OpenCV, ffmpeg) write the right thing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path.parent)
        with writing(self.path):
            fd, tmp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.",
                                            suffix=f".tmp{self.path.suffix}")
        fcntl.flock(fd, fcntl.LOCK_EX)      # released when this process ends, however it ends
        self._lock = fd
        umask = os.umask(0)
        os.umask(umask)
        self._mode = 0o666 & ~umask         # mkstemp makes 0600; the file gets the usual permissions
        os.chmod(tmp_name, self._mode)
        self.tmp = Path(tmp_name)

    def commit(self) -> Path:
        """fsync the temporary file and rename it over `path` (on failure it is removed)."""
        try:
            with writing(self.path), open(self.tmp, "rb+") as f:
                os.fchmod(f.fileno(), self._mode)   # again: a writer may have replaced the file (safetensors)
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._unlock()
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; `path` is left as it was."""
        self.tmp.unlink(missing_ok=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


class OutputInUseError(OSError):
    """Another running program is writing the same output file."""


class OutputLock:
    """Claims an output file for this process: a second run writing the same file is refused, not raced.

    The claim is an flock on `.NAME.lock` beside the file, held until `release()` or the
    end of the process however it ends, so a lock left by a killed run is free again.
    """

    def __init__(self, path: str | os.PathLike, flag: str):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = path.parent / f".{path.name}.lock"
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputInUseError(f"{flag} {path} is being written by another run (pid {holder}); "
                                       f"stop it or choose another file") from None
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:                        # not a lock file its last holder removed as we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            self.lock_path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    file = AtomicFile(path)
    try:
        with writing(path):
            yield file.tmp
    except BaseException:
        file.abort()
        raise
    file.commit()


def write_json(path: str | os.PathLike, data) -> Path:
    """`data` as indented JSON at `path`, written atomically, its folder made: how every benchmark saves its table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path

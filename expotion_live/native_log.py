"""Third-party native logs kept out of the app's own lines, in a log file.

MediaPipe's C++ (LiteRT "INFO: ...", absl "W0000 ...", "Sparsity tensors ...") and ALSA's
library write straight to file descriptor 2, and MediaPipe 1.x heeds none of GLOG_minloglevel,
TF_CPP_MIN_LOG_LEVEL or ABSL_MIN_LOG_LEVEL. So while a live command runs, fd 2 is the log
file and Python's `sys.stderr` writes to a copy of the real stderr: the app's lines reach the
terminal, the libraries' go to `log_path()`.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path


def log_path() -> Path:
    """Where the last live command's native logs are kept (XDG state dir)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "expotion-live" / "native.log"


@contextlib.contextmanager
def native_logs_to_file(path: Path):
    """Point fd 2 at `path` (truncated) for the duration; `sys.stderr` keeps the real stderr.

    A `sys.stderr` that is not fd 2 (a test's capture) is left as it is: it never reached fd 2."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:                  # an unwritable state dir: the logs stay where they were
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    previous = sys.stderr
    try:
        on_fd2 = previous.fileno() == 2
    except (AttributeError, io.UnsupportedOperation, ValueError):
        on_fd2 = False
    if on_fd2:
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), encoding=previous.encoding,
                                      errors="backslashreplace", line_buffering=True)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        if on_fd2:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)

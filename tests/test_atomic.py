"""Atomic writes: the target changes whole on commit, and an abort or an error leaves it as it was."""
import pytest

from expotion_live.atomic import AtomicFile, atomic_path


def test_commit_replaces_and_abort_keeps_the_previous_file(tmp_path):
    target = tmp_path / "take.wav"
    target.write_bytes(b"previous")
    file = AtomicFile(target)
    file.tmp.write_bytes(b"new take")
    assert target.read_bytes() == b"previous" and file.tmp.suffix == ".wav"   # suffix kept for format sniffing
    assert file.commit() == target and target.read_bytes() == b"new take"
    file = AtomicFile(target)
    file.tmp.write_bytes(b"half written")
    file.abort()
    assert target.read_bytes() == b"new take"
    assert [p.name for p in tmp_path.iterdir()] == ["take.wav"]               # no temporary left behind


def test_an_error_inside_atomic_path_leaves_the_previous_file(tmp_path):
    target = tmp_path / "settings.toml"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["settings.toml"]

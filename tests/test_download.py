"""`download`: real huggingface_hub code, tested up to the network call.

No machine here reaches the hub, so the command must fail at once with one clear
line, both in offline mode and against an endpoint nobody listens on (loopback
port 9), and must never take a partial folder for a complete one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from expotion_live.model.download import DownloadError, download_musicgen, has_weights, missing_files, repo_id

REPO = Path(__file__).resolve().parents[1]

# Runs the real subcommand parser and handler in a fresh interpreter, so huggingface_hub
# reads HF_HUB_OFFLINE / HF_ENDPOINT from the environment we give it.
RUN_COMMAND = """
import argparse, sys
from expotion_live.commands import download
parser = argparse.ArgumentParser(prog="expotion-live")
download.add_parser(parser.add_subparsers(dest="command"))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args, None))
"""


def run_download(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **env}
    return subprocess.run([sys.executable, "-c", RUN_COMMAND, "download", "small", "--dir", str(tmp_path / "ck")],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=60)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_offline_fails_at_once_with_a_clear_message(tmp_path):
    result = run_download(tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "facebook/musicgen-small" in line and "HF_HUB_OFFLINE" in line and "resumes" in line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ck" / "musicgen-small" / "config.json").exists()


def test_unreachable_endpoint_fails_at_once_with_a_clear_message(tmp_path):
    result = run_download(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "cannot reach http://127.0.0.1:9" in line
    assert "Traceback" not in result.stderr


def test_a_partial_folder_is_reported_and_kept(tmp_path):
    folder = tmp_path / "ck" / "musicgen-small"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    result = run_download(tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "incomplete" in line and "*.safetensors" in line and "config.json" not in line.split("missing")[1]
    assert (folder / "config.json").read_text() == "{}"  # nothing lost


def test_a_complete_folder_is_used_offline(tmp_path, tiny_musicgen_dir):
    """A finished download needs no network: the same command succeeds and names the folder."""
    shutil.copytree(tiny_musicgen_dir, tmp_path / "ck" / "musicgen-small")
    assert missing_files(tmp_path / "ck" / "musicgen-small") == []
    result = run_download(tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "ck" / "musicgen-small") in result.stdout


def test_unknown_size_is_refused(tmp_path):
    assert repo_id("large") == "facebook/musicgen-large"
    with pytest.raises(DownloadError, match="choose one of small, medium, large"):
        download_musicgen("huge", tmp_path)


def test_every_shard_named_by_the_index_must_be_there(tmp_path):
    """medium and large come in shards: one missing shard means an incomplete download."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "spiece.model").write_bytes(b"\0")
    shards = {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"\0")
    assert missing_files(tmp_path) == ["model-00002-of-00002.safetensors"]
    assert not has_weights(tmp_path)      # doctor, the session and the window agree with the loader
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"\0")
    assert missing_files(tmp_path) == [] and has_weights(tmp_path)

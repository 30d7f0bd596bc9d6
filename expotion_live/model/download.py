"""Fetch MusicGen weights from the Hugging Face hub into a local folder we load from.

Only the files our loader needs are fetched (config, safetensors weights, the T5
tokenizer and the EnCodec feature-extractor config); the hub repos also hold
pickled audiocraft checkpoints of several GB that we never read.

Resumable: huggingface_hub writes each file under `<dest>/.cache/huggingface/download/`
as `*.incomplete` and continues it with an HTTP range request on the next run, then
moves it into place whole, so an interrupted download never leaves a truncated
weight file where the loader would find it. Files already complete are skipped.

Offline (`HF_HUB_OFFLINE=1`, no route, a refused connection) it fails at once with
a one-line message, unless a complete copy is already on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

SIZES = ("small", "medium", "large")

# What MusicgenForConditionalGeneration / MusicgenProcessor read; sharded weights
# (medium, large) come with a safetensors index.
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


class DownloadError(RuntimeError):
    """A download that cannot complete; the message says why and what to do."""


def repo_id(size: str) -> str:
    if size not in SIZES:
        raise DownloadError(f"unknown MusicGen size {size!r}; choose one of {', '.join(SIZES)}")
    return f"facebook/musicgen-{size}"


def model_dir(size: str, dest_dir: str | Path) -> Path:
    """Where `size` lands under `dest_dir` (the layout `[model] dir` points at)."""
    return Path(dest_dir) / f"musicgen-{size}"


def has_weights(model_dir: str | Path) -> bool:
    """A complete transformers-format MusicGen directory: nothing `missing_files` would name."""
    return not missing_files(Path(model_dir))


def missing_files(folder: Path) -> list[str]:
    """The files the loader needs that `folder` lacks (empty = complete)."""
    missing = [name for name in ("config.json",) if not (folder / name).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # sharded weights: every shard the index names
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError):
            shards = [f"{index.name} (unreadable)"]
        missing += [name for name in shards if not (folder / name).is_file()]
    elif not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if not ((folder / "spiece.model").is_file() or (folder / "tokenizer.json").is_file()):
        missing.append("spiece.model or tokenizer.json")
    return missing


def fetch_snapshot(repo: str, target: str | Path, progress: bool = True, allow_patterns: list[str] | None = None,
                   repo_type: str = "model") -> Path:
    """`snapshot_download` of hub repo `repo` into `target` (resumable); failures as one-line DownloadErrors.

    Offline or unreachable with no complete copy on disk, a repo not found, or a folder
    that cannot be written.
    """
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    target = Path(target)
    bars_were_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        huggingface_hub.snapshot_download(repo, repo_type=repo_type, local_dir=target, allow_patterns=allow_patterns)
    except LocalEntryNotFoundError as err:
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            reason, advice = "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE"
        else:
            reason, advice = f"cannot reach {huggingface_hub.constants.ENDPOINT}", "check the network (and HF_ENDPOINT)"
        raise DownloadError(f"cannot download {repo}: {reason} and {target} holds no complete copy; "
                            f"{advice} and run the same command again, it resumes") from err
    except HfHubHTTPError as err:
        raise DownloadError(f"cannot download {repo}: the hub answered {err.response.status_code} "
                            f"({str(err).splitlines()[0]})") from err
    except OSError as err:
        raise DownloadError(f"cannot write {target}: {err}") from err
    finally:
        if not progress and not bars_were_disabled:
            enable_progress_bars()
    return target


def download_musicgen(size: str, dest_dir: str | Path, progress: bool = True) -> Path:
    """Download `facebook/musicgen-{size}` into `dest_dir/musicgen-{size}` and return that folder.

    Raises DownloadError (one actionable line) when the hub cannot be reached and no
    complete copy is on disk, when the repo is not found, or when the result is missing
    files the loader needs.
    """
    repo = repo_id(size)
    target = fetch_snapshot(repo, model_dir(size, dest_dir), progress, ALLOW_PATTERNS)
    missing = missing_files(target)
    if missing:
        raise DownloadError(f"{target} is incomplete (missing {', '.join(missing)}); run the download "
                            f"again with network access, it resumes")
    return target

"""`train` as a real process: killed mid-epoch with SIGKILL and restarted, it loses no completed work.

The restarted run continues from its last saved step and ends with the same adaptor as a
run that was never interrupted (data order depends only on seed and epoch).
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from expotion_live.features.schema import FACE_DIM, FLOW_SHAPE, MOTION_DIM, TimelineWindow
from expotion_live.train.dataset import CACHE_VERSION, cache_dir_for, write_clip, write_index

# The train subcommand behind its own parser (the project CLI wires the same add_parser).
CLI = ("import argparse, sys\n"
       "from expotion_live.settings import Settings\n"
       "from expotion_live.commands import train as commands\n"
       "parser = argparse.ArgumentParser(); commands.add_parser(parser.add_subparsers())\n"
       "args = parser.parse_args(sys.argv[1:]); sys.exit(args.handler(args, Settings()))\n")


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *argv], capture_output=True, text=True, timeout=600)


def run_in_process(*argv: str) -> int:
    """The same command in this process (no interpreter start-up): for runs that are not killed."""
    from expotion_live.settings import Settings
    from expotion_live.commands import train as commands

    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.handler(args, Settings())


def prepared_dataset(root: Path, musicgen, n_clips: int = 14, frames: int = 25) -> Path:
    """A dataset folder whose cache holds random clips, as `prepare` would leave it."""
    from expotion_live.train.prepare import codec_fingerprint

    rng = np.random.default_rng(0)
    cache = cache_dir_for(root)
    for i in range(n_clips):
        window = TimelineWindow(t_end=frames / 50, face=rng.normal(size=(frames, FACE_DIM)).astype(np.float32),
                                motion=rng.normal(size=(frames, MOTION_DIM)).astype(np.float32),
                                flow=rng.normal(size=(frames, *FLOW_SHAPE)).astype(np.float32))
        codes = rng.integers(0, 2048, size=(4, frames))
        write_clip(cache, f"clip{i:02d}", window, codes, caption="slow strings" if i % 2 else "", source_stamp={})
    write_index(cache, {"version": CACHE_VERSION, "codec": codec_fingerprint(musicgen.codec), "frame_rate": 50,
                        "clips": [{"name": f"clip{i:02d}", "frames": frames} for i in range(n_clips)],
                        "test_fraction": 0.0, "test": [], "skipped": []})
    return root


@pytest.fixture(scope="module")
def dataset(tiny_musicgen_dir, tmp_path_factory):
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, device="cpu", precision="fp32")
    return prepared_dataset(tmp_path_factory.mktemp("data"), musicgen)


def train_args(data: Path, model: Path, out: Path) -> list[str]:
    return ["train", str(data), "--model", str(model), "--out", str(out), "--device", "cpu", "--epochs", "2",
            "--batch-size", "1", "--segment-seconds", "0.5", "--save-every", "1", "--val-fraction", "0.2", "--paper-windows",
            "--quiet"]


def read_state(out: Path) -> dict | None:
    try:
        return torch.load(out / "trainer_state.pt", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def test_killed_training_resumes_without_losing_work(dataset, tiny_musicgen_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    killed_run = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", CLI, *train_args(dataset, tiny_musicgen_dir, killed_run)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        state = read_state(killed_run)
        if state is not None and state["global_step"] >= 3 and state["step_in_epoch"] > 0:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL, "training finished before it could be killed mid-epoch"
    saved = read_state(killed_run)
    assert saved["epoch"] == 0 and 0 < saved["step_in_epoch"] < saved["steps_per_epoch"]

    resumed = run_cli(*train_args(dataset, tiny_musicgen_dir, killed_run))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed_run} at epoch 1, step {saved['step_in_epoch']}" in resumed.stdout
    final = read_state(killed_run)
    steps = [step for step, _ in final["history"]["train"]]
    assert steps == list(range(1, 2 * final["steps_per_epoch"] + 1))   # every step exactly once
    assert final["epoch"] == 2 and len(final["history"]["val"]) == 2

    # Same end point as a run that was never interrupted.
    straight_run = tmp_path / "straight"   # a process like the killed one (same threads, same float order)
    straight = run_cli(*train_args(dataset, tiny_musicgen_dir, straight_run))
    assert straight.returncode == 0, straight.stderr
    straight_out = straight.stdout
    a, b = load_file(killed_run / "adaptor.safetensors"), load_file(straight_run / "adaptor.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name

    # Deliverables: adaptor-only checkpoints, the best one, the curve; the printed parameter count.
    assert (killed_run / "best" / "adaptor.json").is_file()
    assert (killed_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    n_params = sum(t.numel() for t in a.values())
    assert f"trainable parameters: {n_params:,} (" in straight_out


def test_train_errors_are_one_line(dataset, tiny_musicgen_dir, tmp_path, capsys):
    assert run_in_process("train", str(tmp_path / "nowhere"), "--model", str(tiny_musicgen_dir),
                          "--out", str(tmp_path / "r")) == 1
    assert "run `expotion-live prepare DATA --model DIR` first" in capsys.readouterr().err

    assert run_in_process(*train_args(dataset, tiny_musicgen_dir, tmp_path / "r"), "--batch-size", "500") == 1
    err = capsys.readouterr().err
    assert err.startswith("expotion-live: ") and "lower --batch-size" in err and len(err.splitlines()) == 1


def test_save_every_zero_saves_at_epoch_ends_only(dataset, tiny_musicgen_dir, tmp_path):
    out = tmp_path / "epochs"
    args = [*train_args(dataset, tiny_musicgen_dir, out), "--epochs", "1", "--save-every", "0"]
    assert run_in_process(*args) == 0
    state = read_state(out)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
    assert (out / "adaptor.safetensors").is_file()

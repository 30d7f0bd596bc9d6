"""`train` under `torchrun` (DDP, gloo on CPU): two processes give the adaptor one process gets.

Rank r takes every other batch of the same permutation and DDP averages the gradients,
so 2 processes x batch 1 must follow the same path as 1 process x batch 2.
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from test_train_resume import CLI, prepared_dataset, run_in_process


def test_torchrun_two_processes_match_one_process(tiny_musicgen_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from expotion_live.model.adaptor import AdaptorConfig, ConditionAdaptor
    from expotion_live.model.generate import MusicGen

    musicgen = MusicGen.load(tiny_musicgen_dir, precision="fp32")
    data = prepared_dataset(tmp_path / "data", musicgen, n_clips=10)
    script = tmp_path / "cli.py"
    script.write_text(CLI)
    common = ["train", str(data), "--model", str(tiny_musicgen_dir), "--device", "cpu", "--epochs", "1",
              "--segment-seconds", "0.5", "--paper-windows", "--look-ahead", "unlimited", "--look-back", "unlimited",
              "--val-fraction", "0.2",
              "--quiet"]   # the paper's setup, on which the gate check below was calibrated
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), *common, "--out", str(tmp_path / "ddp"), "--batch-size", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("trainable parameters") == 1          # only rank 0 talks and writes
    assert "8 training clips, 2 validation clips (0 test clips held out), 4 steps per epoch" in ddp.stdout

    assert run_in_process(*common, "--out", str(tmp_path / "single"), "--batch-size", "2") == 0
    assert "4 steps per epoch" in capsys.readouterr().out
    a, b = load_file(tmp_path / "ddp" / "adaptor.safetensors"), load_file(tmp_path / "single" / "adaptor.safetensors")
    # Per element, Adam turns float-noise-sized gradients into full-size steps, so compare the
    # runs as vectors: their difference is tiny next to how far training moved the weights.
    # (A wrong data split or missing gradient averaging differs by about the whole update.)
    torch.manual_seed(0)
    init = ConditionAdaptor(AdaptorConfig(), musicgen.decoder).state_dict()
    flat = {k: torch.cat([t[name].flatten() for name in sorted(a)]) for k, t in
            (("ddp", a), ("single", b), ("init", init))}
    moved = (flat["single"] - flat["init"]).norm()
    assert (flat["ddp"] - flat["single"]).norm() < 0.05 * moved, ((flat["ddp"] - flat["single"]).norm(), moved)
    assert torch.allclose(a["gates"], b["gates"], atol=1e-5) and a["gates"].abs().min() > 5e-3
    state_ddp = torch.load(tmp_path / "ddp" / "trainer_state.pt", weights_only=True)
    state_one = torch.load(tmp_path / "single" / "trainer_state.pt", weights_only=True)
    assert abs(state_ddp["history"]["val"][0][1] - state_one["history"]["val"][0][1]) < 1e-4

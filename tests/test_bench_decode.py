"""`expotion-live bench decode` end to end on the tiny random model: every row it promises, in its JSON.

Times are not judged here (benchmarks measure, tests do not time); what is checked is
that one run holds transformers and ours (step by step and streamed) at each precision
and thread count, on the decode backend each precision gets, that each
speed-up is taken against transformers on the same thread count, and that the logit
errors it reports are real measurements within each precision's tolerance.
"""
from __future__ import annotations

import json

import pytest
import torch

from expotion_live.cli import main
from expotion_live.model.precision import LOGIT_TOLERANCE, PRECISIONS


def test_bench_decode_times_every_precision_at_every_thread_count(tiny_musicgen_dir, tmp_path):
    out = tmp_path / "decode.json"
    threads_before = torch.get_num_threads()
    try:
        assert main(["bench", "decode", "--model", str(tiny_musicgen_dir), "--steps", "50",
                     "--threads", "1,2", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads_before)
    table = json.loads(out.read_text())
    rows = {(r["name"], r["precision"], r["threads"]): r for r in table["rows"]}
    expected = {("transformers generate", "fp32", t) for t in (1, 2)} | {
        (name, p, t) for name in ("ours", "ours streamed") for p in PRECISIONS for t in (1, 2)}
    assert set(rows) == expected
    for (name, precision, threads), row in rows.items():
        reference = rows[("transformers generate", "fp32", threads)]
        # 50 frames over the 4-codebook delay pattern, less the prefill; streamed: the position reached
        assert row["steps"] == (50 + 1 + 3 if name == "ours streamed" else 50 + 2)
        assert row["speedup"] == pytest.approx(reference["ms_median"] / row["ms_median"])
        assert row["bandwidth_gb_s"] > 0
        assert row["floor_ms"] == pytest.approx(row["weight_mb_per_step"] / row["bandwidth_gb_s"])
        assert row["x_floor"] == pytest.approx(row["ms_median"] / row["floor_ms"])
        # the backend each precision got at load, on the CPU
        assert row["backend"] == ("-" if name == "transformers generate" else
                                  {"fp32": "cpu-modules", "bf16": "cpu-modules", "int8": "int8-numba",
                                   "int4": "int4-numba"}[precision])
        if name != "transformers generate":
            err, greedy = row["logit_rel_err"], row["greedy_agreement"]
            assert err == 0.0 if precision == "fp32" else 0.0 < err < LOGIT_TOLERANCE[precision]
            assert greedy == 1.0 if precision == "fp32" else 0.5 < greedy <= 1.0


def test_bench_decode_rejects_a_bad_thread_list(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "decode", "--threads", "1,zero"])
    assert done.value.code == 2
    assert "--threads takes a comma-separated list" in capsys.readouterr().err

"""`expotion-live bench stage` end to end: both conditions measured on real tracking, in its JSON.
Times are not judged here (benchmarks measure, tests do not time)."""
from __future__ import annotations

import json

from expotion_live.cli import main


def test_bench_stage_measures_tracking_with_and_without_the_view(tmp_path, qapp):
    out = tmp_path / "stage.json"
    assert main(["bench", "stage", "--frames", "20", "--rounds", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["condition"]: row for row in result["rows"]}
    assert set(rows) == {"no view", "stage view"}
    assert all(row["fps_median"] > 0 and len(row["fps_runs"]) == 1 for row in rows.values())
    assert result["tick_median_ms"] > 0 and result["tick_p99_ms"] >= result["tick_median_ms"]

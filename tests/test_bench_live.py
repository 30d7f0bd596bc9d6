"""`expotion-live bench live` end to end on the tiny random model with real tracking: every column, in its JSON.
Times are not judged here (benchmarks measure, tests do not time); what is checked is that a row holds
the session's measures and each live thread's busy share, the EnCodec part of the generator's apart."""
from __future__ import annotations

import json
import sys
import threading
import time

from conftest import REPO
from expotion_live.cli import main


def test_bench_live_reports_each_threads_busy_share_beside_the_sessions_measures(tmp_path):
    out = tmp_path / "live.json"
    assert main(["bench", "live", "--models", "tiny", "--precisions", "int8", "--chunks", "0.5", "--contexts", "2",
                 "--seconds", "3", "--tracking", "video", "--model-cache", str(tmp_path / "models"),
                 "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "tiny" and row["played_s"] >= 3.0 and row["chunks"] >= 1 and row["rtf"] > 0
    assert set(row["busy"]) == {"generator", "codec", "tracking", "capture", "scheduler", "output"}
    assert all(share > 0 for share in row["busy"].values()), row["busy"]


def test_thread_cpu_seconds_counts_a_threads_own_cpu_by_its_role():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_live", REPO / "bench" / "live.py")
    bench_live = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench_live          # its dataclasses look their module up there
    spec.loader.exec_module(bench_live)
    thread_cpu_seconds = bench_live.thread_cpu_seconds

    done, spun = threading.Event(), []

    def spin():                                   # 0.2 s of this thread's own CPU, however loaded the machine
        while time.thread_time() < 0.2:
            pass
        spun.append(True)
        done.wait()

    worker = threading.Thread(target=spin, name="generator_0")
    idle = threading.Thread(target=done.wait, name="tracking")
    worker.start(), idle.start()
    try:
        while not spun:
            time.sleep(0.01)
        busy = thread_cpu_seconds()
    finally:
        done.set()
        worker.join(), idle.join()
    assert busy["generator"] >= 0.2 and busy["tracking"] < 0.05

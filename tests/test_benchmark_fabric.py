"""benchmarks/fabric.py stays runnable: its quick mode prints tables and one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fabric.py"


def test_quick_benchmark_reports_every_table_and_target():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["quick"] is True
    pairs = {(row["topology"], row["fabric"]) for row in doc["rows"]}
    assert {("chain64", "tiny_4x4"), ("two_timescale", "wormhole_n150")} <= pairs
    for row in doc["rows"]:
        assert set(row["simulations"]) >= {"locked_m1", "locked_m8", "dni_m1", "dni_m8"}
        if "methods" in row:
            assert {"row-major", "snake", "greedy", "anneal"} <= set(row["methods"])
            assert row["methods"]["row-major"]["vs_row_major"] == 1.0
    tt = next(
        r for r in doc["rows"] if (r["topology"], r["fabric"]) == ("two_timescale", "wormhole_n150")
    )
    assert tt["simulations"]["speedup_m1"] > 0
    assert tt["simulations"]["dni_m1"]["samples_per_s"] > 0
    targets = doc["targets"]
    assert {
        "place_1000_agents_galaxy",
        "simulate_1m_messages",
        "exact_gap_4x4",
        "anneal_vs_row_major",
    } <= set(targets)
    assert targets["exact_gap_4x4"]["gap"] >= -1e-9  # the exact optimum is never beaten
    assert targets["simulate_1m_messages"]["messages"] > 0

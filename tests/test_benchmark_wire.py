"""benchmarks/wire.py --quick --json runs to the end and reports every size (never speed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZES = [64, 4096, 65536, 1 << 20, 16 << 20]


@pytest.mark.timeout(180)
def test_wire_benchmark_quick_reports_all_sizes_with_positive_figures() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "wire.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [row["size"] for row in report["throughput"]] == SIZES
    for row in report["throughput"]:
        for impl in ("raw", "synthgrad"):
            assert row[impl]["msgs_per_s"] > 0 and row[impl]["gb_per_s"] > 0
        assert row["ratio"] > 0
    rtt = report["round_trip_64B"]
    for impl in ("raw", "synthgrad"):
        assert 0 < rtt[impl]["p50_us"] <= rtt[impl]["p99_us"]
    assert rtt["p50_ratio"] > 0
    assert report["torch_loaded"] is False

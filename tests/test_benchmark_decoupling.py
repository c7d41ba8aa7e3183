"""Smoke test of benchmarks/decoupling.py: every arm runs and reports positive figures.

Speed is the benchmark's business, never a test's: nothing here compares figures.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decoupling.py"
TIMEOUT_S = 420  # a quick run takes under a minute alone; shared machines are slower
ARMS = ["locked", "dni-send", "dni-recv", "dni-small-sg", "dni-1p", "bp-1p", "bp-1p-rt"]


def run_quick(script: Path) -> dict:
    """Run `script --quick --json`; on timeout SIGTERM it (it stops its children), then kill."""
    proc = subprocess.Popen(
        [sys.executable, str(script), "--quick", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        pytest.fail(f"{script.name} --quick did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_quick_run_reports_every_arm_with_positive_figures():
    report = run_quick(SCRIPT)
    assert report["quick"] is True
    assert sorted(report["arms"]) == sorted(ARMS)
    for name, arm in report["arms"].items():
        for key in ("samples_per_s", "end_to_end_samples_per_s", "cores"):
            assert arm[key] is not None and arm[key] > 0, (name, key, arm)
        assert 0.0 < arm["test_accuracy"] <= 1.0, (name, arm)
    assert len(report["ratios"]) == 5
    assert all(r["value"] is not None and r["value"] > 0 for r in report["ratios"])
    sg = report["sg_cost"]
    for key in ("layer_ms", "sg_predict_ms", "sg_regress_ms", "sg_over_layer"):
        assert sg[key] > 0, key

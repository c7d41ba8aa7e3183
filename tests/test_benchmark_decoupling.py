"""Smoke test of benchmarks/decoupling.py: every arm runs and reports positive figures.

Speed is the benchmark's business, never a test's: nothing here compares figures.
"""

from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decoupling.py"
TIMEOUT_S = QUICK_TIMEOUT_S
ARMS = ["locked", "dni-send", "dni-recv", "dni-small-sg", "dni-1p", "bp-1p", "bp-1p-rt"]


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

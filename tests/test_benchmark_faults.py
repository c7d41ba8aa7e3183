"""Smoke test of benchmarks/faults.py: the three arms run, the faulty ones are survived.

Accuracy gaps and times are the benchmark's figures (docs/results.md), not asserted here.
"""

from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_run_survives_two_kills_and_a_hang():
    report = run_quick(SCRIPT)
    assert report["quick"] is True
    (run,) = report["runs"]
    assert run["kills"]["restarts"] == 2 and len(run["kills"]["disturbed"]) == 2
    assert run["hang"]["restarts"] == 1 and "was silent for" in run["hang"]["faults"][0]["cause"]
    assert run["clean"]["restarts"] == 0 and run["clean"]["faults"] == []
    assert report["summary"]["budget_reached"] is True
    for arm in ("clean", "kills", "hang"):
        assert 0.0 < run[arm]["test_accuracy"] <= 1.0

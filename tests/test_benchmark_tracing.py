"""Smoke test of benchmarks/tracing.py: both arms run and the traced one writes its trace.

The ratio of the two rates is the benchmark's figure (docs/results.md), not asserted here.
"""

from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tracing.py"


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_run_measures_both_arms():
    report = run_quick(SCRIPT)
    assert report["quick"] is True and report["measure"]["met"] is None
    (pair,) = report["measure"]["pairs"]
    assert pair["off"]["steady_samples_per_s"] > 0 and pair["on"]["steady_samples_per_s"] > 0
    assert pair["on"]["spans_per_step"] > 5 and pair["on"]["trace_mb"] > 0
    bound = report["measure"]["off_bound"]
    assert 0 < bound["fraction_of_step"] < 1

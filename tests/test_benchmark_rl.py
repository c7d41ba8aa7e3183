"""Smoke test of benchmarks/rl.py: every arm runs its tiny budget and reports its figures.

Steps and wall time to the threshold are the benchmark's figures (docs/results.md), not
asserted here."""

from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rl.py"


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_run_measures_every_arm(tmp_path):
    report = run_quick(SCRIPT, extra=("--pictures", str(tmp_path)))
    assert report["quick"] is True
    runs = report["results"]["cartpole"]
    assert set(runs) == {"dni", "cdni", "locked", "plain"}
    for arm, (run,) in runs.items():
        assert run["global_step"] >= 2048 * 0.9, arm
        assert run["sps"] > 0 and run["curve"], arm
        assert run["steps_to_threshold"] is None  # --quick sets no threshold
    assert Path(report["pictures"][0]).stat().st_size > 10_000

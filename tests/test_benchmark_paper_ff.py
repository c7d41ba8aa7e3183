"""Smoke test of benchmarks/paper_ff.py: every section runs its arms as processes and plots them.

Accuracy at a smoke budget says nothing about the paper's claims (that is the full run's
business, docs/results.md); here every arm must have trained past chance.
"""

from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_ff.py"
SECTIONS = ["fcn", "one_dni", "sparse", "unlock", "dni_long", "cnn", "time"]
CHANCE_ERROR = 90.0  # % test error of guessing among 10 classes


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_run_covers_every_section_with_learning_arms(tmp_path):
    report = run_quick(SCRIPT, extra=("--out", str(tmp_path)))
    assert report["quick"] is True
    assert list(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        assert section["arms"], name
        assert "|" in section["table"], name
        assert Path(section["plot"]).is_file(), name
        for arm_name, arm in section["arms"].items():
            errors = [error for _, error in arm["curve"]]
            assert errors and errors[-1] < CHANCE_ERROR, (name, arm_name, errors)
    time_arms = report["sections"]["time"]["arms"]
    assert all(arm["points"][0][0] > 0 for arm in time_arms.values())  # seconds from the first batch
    assert (tmp_path / "paper_ff.json").is_file()

"""Smoke test of benchmarks/paper_rnn.py: every section runs real processes and reports sane values.

Learning is the benchmark's business at its full budget: the quick run only trains a few
dozen windows, so nothing here compares arms.
"""

import math
from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_rnn.py"
# Twelve-odd `synthgrad run`s, a few seconds of start-up each: twice the usual allowance.
TIMEOUT_S = 2 * QUICK_TIMEOUT_S


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_quick_run_reports_every_section():
    report = run_quick(SCRIPT, timeout=TIMEOUT_S)
    assert report["quick"] is True
    sections = report["sections"]
    for task in ("copy", "repeat_copy"):
        runs = sections[task]["runs"]
        assert {(r["T"], r["arm"]) for r in runs} == {(T, arm) for T in sections[task]["T"] for arm in ("bptt", "dni", "dni_aux")}
        for r in runs:
            assert r["solved"] >= 0 and r["level"] >= 1, r
            assert r["curve"] and r["curve"][-1][0] == r["updates"], r
            assert (r["sg_fit"] is None) == (r["arm"] == "bptt"), r  # only SG arms report a fit
            assert r["wall_s"] > 0
    lm = sections["lm"]
    assert set(lm["arms"]) == {"bptt_T5", "bptt_T20", "dni_aux_T5"}
    for a in lm["arms"].values():
        # An untrained model over ~80 characters is near log2(80) = 6.3 bits; all stay finite.
        assert 0 < a["bpc"] < 8 and math.isfinite(a["bpc"]), a
        assert a["updates_to_common"] is not None and a["chars_to_common"] > 0, a
    # The common BPC is the worst arm's best, so every arm reaches it.
    assert lm["common_bpc"] == max(a["best_bpc"] for a in lm["arms"].values())
    arms = sections["two_timescale"]["arms"]
    assert set(arms) == {"dni", "cdni", "locked", "none"}
    assert all(a["curve"] for a in arms.values())
    for path in report["plots"]:
        assert Path(path).stat().st_size > 0

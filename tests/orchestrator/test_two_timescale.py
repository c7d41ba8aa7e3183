"""The two-timescale system as real processes: it learns, and its benchmark section runs."""

from __future__ import annotations

import sys

import pytest

from ..conftest import EXAMPLES, ROOT, last_json

pytestmark = pytest.mark.slow

# Chance: the most likely count at each position of a 16-digit episode (A: odd digits,
# B: 3s at every 4th digit), computed from the binomial counts.
CHANCE_A, CHANCE_B = 0.29, 0.44


@pytest.mark.timeout(240)
def test_locked_two_timescale_learns_both_counts_across_processes(cli):
    # Locked: A runs ahead 4 ticks to fill B's block, then updates with B's true gradient;
    # if a gradient went back to the wrong step, or a block were never completed, the run
    # would hang or B would stay at chance.
    sets = ["links.1.mode=backprop", "run.steps=1600", "run.eval_every=0", "run.eval_batch_size=100", "agents.digits.eval_steps=16"]
    proc = cli("run", str(EXAMPLES / "two_timescale.toml"), *sum((["--set", s] for s in sets), []), "--json", "--quiet", timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = last_json(proc.stdout)
    final = {e["agent"]: e["test_accuracy"] for e in summary["evaluations"] if e["final"]}
    assert final["fast"] > CHANCE_A + 0.1, final
    assert final["slow"] > CHANCE_B + 0.1, final
    assert {n: a["steps"] for n, a in summary["agents"].items()} == {"digits": 1600, "fast": 400, "slow": 100}


@pytest.mark.timeout(300)
def test_timescale_benchmark_section_quick(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _timescale
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    section = _timescale.run_section(quick=True, runs_dir=tmp_path)
    assert set(section["arms"]) == {"dni", "cdni", "locked", "none"}
    for arm in section["arms"].values():
        assert [point[0] for point in arm["curve"]] == [80, 160]
        assert all(0.0 <= acc <= 1.0 for point in arm["curve"] for acc in point[1:])
        # "final" is the mean of the last evaluations (here both of the two)
        assert arm["a_final"] == pytest.approx((arm["curve"][0][1] + arm["curve"][1][1]) / 2)
        assert arm["b_final"] == pytest.approx((arm["curve"][0][2] + arm["curve"][1][2]) / 2)
        assert arm["a_steps_to_final"] in (80, 160) and arm["wall_s"] > 0
    assert "| dni |" in _timescale.text(section)

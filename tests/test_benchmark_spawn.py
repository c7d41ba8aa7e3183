"""Smoke test of benchmarks/spawn.py: both launchers report, and a stopped run leaves nothing.

Speed and memory are the benchmark's business, never a test's: nothing here compares figures
with targets.
"""

import signal
from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "spawn.py"
TIMEOUT_S = QUICK_TIMEOUT_S


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_quick_run_reports_both_launchers_and_cleans_up():
    report = run_quick(SCRIPT)
    assert report["quick"] is True
    registration = report["registration"]
    for key in ("launch_to_registered_s", "registered_s", "spawn_s"):
        assert registration[key] > 0, key
    memory = report["memory"]
    for key in ("agent_pss_mb", "agent_uss_mb", "source_pss_mb", "tree_pss_mb"):
        assert memory[key] > 0, key
    stop = memory["stop"]
    assert stop["exit_code"] == 128 + signal.SIGTERM  # synthgrad run's answer to SIGTERM
    assert stop["left_running_after_10_s"] == []
    assert report["per_extra_agent"]["mb"] > 0
    spawned = report["spawn_method"]
    assert spawned["agents"] == registration["agents"]
    assert spawned["ready_s"] > 0 and spawned["pss_mb"] > 0

"""Smoke test of benchmarks/spawn.py: both launchers report, and a stopped run leaves nothing.

Speed and memory are the benchmark's business, never a test's: nothing here compares figures
with targets.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "spawn.py"
TIMEOUT_S = 420  # a quick run takes under a minute alone; shared machines are slower


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
def test_quick_run_reports_both_launchers_and_cleans_up():
    report = run_quick(SCRIPT)
    assert report["quick"] is True
    registration = report["registration"]
    for key in ("launch_to_registered_s", "registered_s", "spawn_s"):
        assert registration[key] > 0, key
    memory = report["memory"]
    for key in ("layer_agent_pss_mb", "layer_agent_uss_mb", "source_pss_mb", "tree_pss_mb"):
        assert memory[key] > 0, key
    stop = memory["stop"]
    assert stop["exit_code"] == 128 + signal.SIGTERM  # synthgrad run's answer to SIGTERM
    assert stop["left_running_after_10_s"] == []
    assert report["per_extra_agent"]["mb"] > 0
    spawned = report["spawn_method"]
    assert spawned["agents"] == registration["agents"]
    assert spawned["ready_s"] > 0 and spawned["pss_mb"] > 0

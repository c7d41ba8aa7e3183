"""Smoke test of benchmarks/soak.py: a short soak with kills reports, restarts, and cleans up.

Speed, memory figures and wall time are the benchmark's business, never a test's: nothing here
compares figures with targets; it checks that the benchmark measured what it says and that the
run it drove left nothing behind.
"""

import json
import os
from pathlib import Path

import pytest

from .conftest import QUICK_TIMEOUT_S, run_quick

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
TIMEOUT_S = QUICK_TIMEOUT_S


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_quick_soak_with_kills_restarts_reports_and_cleans_up(tmp_path):
    report = run_quick(SCRIPT, extra=("--runs-dir", str(tmp_path)))
    assert report["quick"] is True
    for key in ("run", "memory", "queues", "stalls", "dropped", "faults", "cleanup", "sampled"):
        assert key in report, key
    run = report["run"]
    assert run["exit_code"] == 130  # stopped by SIGINT, as the benchmark does
    assert run["interrupted"] == "SIGINT" and not run["ended_early"] and run["error"] is None
    assert run["source_steps"] > 0 and run["head_steps"] > 0

    # Quick mode kills agents (a kill every 6 s): each is a fault, restarted, rejoined.
    faults = report["faults"]
    assert report["chaos_s"] > 0
    assert faults["restarts"] >= 1 and len(faults["kills"]) >= 1
    assert faults["kills_matched_by_faults"]
    assert faults["no_uncounted_loss"], faults
    assert faults["rejoin_s_max"] is not None and faults["rejoin_s_max"] > 0
    summary = json.loads((Path(run["run_dir"]) / "summary.json").read_text())
    assert summary["restarts"] == faults["restarts"]
    assert {f["agent"] for f in summary["faults"]} <= set(summary["agents"]) - {"source"}

    # Every agent was sampled (memory and METRICS), and the memory figures are positive.
    agents = set(summary["agents"])
    assert len(agents) == report["agents"]
    assert set(report["sampled"]) == agents
    assert all(n >= 1 for n in report["sampled"].values()), report["sampled"]
    assert set(report["metrics_seen"]) == agents
    memory = report["memory"]
    for key in ("agent_warm_mb_median", "agent_end_mb_median", "agents_end_mb_total"):
        assert memory[key] > 0, key
    for name in ("source", "head", "orchestrator"):
        assert memory[name]["warm_mb"] > 0 and memory[name]["end_mb"] > 0, name
    assert memory["agent_processes_seen"] >= report["agents"]
    assert memory["growth_pct_max"] is not None and memory["growth_pct_median"] is not None
    for key in ("queued", "held", "parked"):
        assert report["queues"][key]["max"] >= 0
    assert report["stalls"]["intervals"] >= 1

    # Nothing outlives the run: no agent process (by agents.json), no ipc directory.
    final = json.loads((Path(run["run_dir"]) / "agents.json").read_text())
    started = {int(pid): p["started"] for pid, p in report["processes"].items()}
    for name, entry in final["agents"].items():
        pid = entry["pid"]
        assert pid in started, f"{name}'s last process {pid} was never sampled"
        assert _start_ticks(pid) != started[pid], f"{name} (pid {pid}) is still running"
    for pid, ticks in started.items():  # every incarnation and helper the benchmark saw
        assert _start_ticks(pid) != ticks, f"pid {pid} ({report['processes'][str(pid)]}) is alive"
    assert report["cleanup"]["alive_after"] == []
    assert final["ipc_dir"] == report["cleanup"]["ipc_dir"]
    assert not os.path.exists(final["ipc_dir"])
    # Abandoned checkpoint rounds (a kill during a round) are removed by the end of the run.
    assert report["cleanup"]["checkpoint_folders_without_manifest"] == []

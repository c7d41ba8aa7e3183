"""Stopping: signals end every agent and leave no socket file; a failing agent is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import EXAMPLES

pytestmark = pytest.mark.slow

FAULTY = '''
import os
import time

from synthgrad.agents.kinds.layers import Dense

class Faulty(Dense):
    """A dense layer that raises on its fifth training step."""
    kind = "faulty"
    calls = 0

    def forward(self, inputs):
        Faulty.calls += 1
        if Faulty.calls == 5:
            with open(os.environ["FAULT_STAMP"], "w") as stamp:
                stamp.write(repr(time.time()))
            raise RuntimeError("deliberate failure in step five")
        return super().forward(inputs)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (it holds no resources but its table entry).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(EXAMPLES / "mnist_dni.toml"),
         "--set", "run.steps=100000", "--runs-dir", str(tmp_path / "runs")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    found = _wait_for(lambda: list((tmp_path / "runs").glob("*/metrics.jsonl")) and any(
        p.stat().st_size > 0 for p in (tmp_path / "runs").glob("*/metrics.jsonl")), 60)
    if not found:
        proc.kill()
        pytest.fail(f"the run never started training: {proc.communicate(timeout=10)}")
    return proc, next((tmp_path / "runs").glob("*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_agent_within_5s_and_removes_ipc_files(tmp_path, signum):
    proc, run_dir = _start_long_run(tmp_path)
    info = json.loads((run_dir / "agents.json").read_text())
    pids = [a["pid"] for a in info["agents"].values()]
    assert pids and all(_alive(p) for p in pids)
    proc.send_signal(signum)
    try:
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert _wait_for(lambda: not any(_alive(p) for p in pids), 5), "an agent outlived its run"
    assert proc.returncode == 128 + signum
    assert not Path(info["ipc_dir"]).exists(), "ipc socket files were left behind"


def test_an_agent_that_raises_ends_the_run_naming_it_with_its_traceback(tmp_path):
    (tmp_path / "faulty_agent.py").write_text(FAULTY)
    stamp = tmp_path / "raised_at"
    proc = subprocess.run(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(EXAMPLES / "mnist_dni.toml"),
         "--set", "run.steps=100000", "--set", 'agents.l2.kind="faulty_agent:Faulty"'],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_STAMP": str(stamp)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "agent 'l2' failed" in proc.stderr
    assert "Traceback" in proc.stderr and "deliberate failure in step five" in proc.stderr
    assert "faulty_agent.py" in proc.stderr
    assert time.time() - float(stamp.read_text()) < 5, "the run took more than 5 s to end after the failure"
    info = json.loads(next((tmp_path / "runs").glob("*/agents.json")).read_text())
    assert not any(_alive(a["pid"]) for a in info["agents"].values())

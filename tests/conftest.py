"""Shared fixtures: running the `synthgrad` CLI as a real process, with hard timeouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_cli(
    args: list[str], cwd: Path, timeout: float = 180, env: dict | None = None, plots: bool = False
) -> subprocess.CompletedProcess:
    """Run `synthgrad ARGS` in a fresh interpreter; a hang fails the test instead of CI.

    A `run` draws no plots unless `plots` (they cost a few seconds a run; the tests of
    watching a run ask for them)."""
    full_env = {**os.environ, **(env or {})}
    if args[:1] == ["run"] and not plots:
        args = [*args, "--no-plots"]
    return subprocess.run(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict:
    """The JSON object on the last line of a `--json` run."""
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def cli(tmp_path):
    """`cli(*args)` runs the CLI with runs going under a temp dir; returns the process."""

    def _run(*args: str, timeout: float = 180, env: dict | None = None):
        return run_cli(list(args), cwd=tmp_path, timeout=timeout, env=env)

    return _run


QUICK_TIMEOUT_S = 420  # a quick benchmark takes under a minute alone; shared machines are slower


def run_quick(script: Path, timeout: float = QUICK_TIMEOUT_S, extra: tuple[str, ...] = ()) -> dict:
    """Run a benchmark with `--quick --json` (and `extra` arguments); on timeout SIGTERM it (it
    stops its children), then kill."""
    proc = subprocess.Popen(
        [sys.executable, str(script), "--quick", "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        pytest.fail(f"{script.name} --quick did not finish within {timeout} s")
    assert proc.returncode == 0, err[-3000:]
    return last_json(out)


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: more torch threads only contend."""
    import torch  # here, so that torch-free tests never import it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

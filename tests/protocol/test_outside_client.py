"""An agent written from docs/PROTOCOL.md alone (tests/protocol/outside_agent.py: raw pyzmq,
msgpack and struct, no synthgrad import) joins a real run as one of its layers.

The spec's section 12.1: an agent in another language joins through a launcher of its own,
one that runs the client with its name and the control endpoint.  This test's launcher starts
the outside agent for `l2` as a plain subprocess and every other agent through the reference
fork server; the run then trains across both, end to end.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.launcher import ForkServerLauncher
from synthgrad.orchestrator.plan import plan_run
from synthgrad.orchestrator.progress import Progress
from synthgrad.orchestrator.rundir import RunDir
from synthgrad.orchestrator.supervisor import Supervisor

CLIENT = Path(__file__).with_name("outside_agent.py")
OUTSIDE = "l2"


class ProcessHandle:
    """The launcher handle of section 12.1 for a plain subprocess."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.pid = proc, proc.pid

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class OutsideLauncher(ForkServerLauncher):
    """The reference fork server for every agent but `OUTSIDE`, which runs the outside client."""

    def start(self, name, control_endpoint, log_path, keys_dir=None):
        if name != OUTSIDE:
            return super().start(name, control_endpoint, log_path, keys_dir)
        log = open(log_path, "w")  # noqa: SIM115 - the child writes it for its whole life
        proc = subprocess.Popen([sys.executable, str(CLIENT), control_endpoint, name], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return ProcessHandle(proc)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_agent_written_from_the_spec_alone_trains_in_a_real_run(tmp_path):
    # source -> l1 (dense 64) -> l2 (the outside agent: the identity) -> head, locked links,
    # so l1 learns only through the gradients the outside agent passes back.
    layers = {"l1": builder.agent("dense", width=64), OUTSIDE: builder.agent("dense", width=64)}
    run = {"name": "outside", "steps": 300, "batch_size": 64, "eval_batch_size": 359, "seed": 0, "lr": 1e-3}
    doc = builder.chain(layers, mode="backprop", dataset="digits", run=run)
    plan = plan_run(builder.parse(doc))
    run_dir = RunDir(tmp_path / "runs", "outside")
    launcher = OutsideLauncher()
    launcher.warm()
    summary = Supervisor(plan, run_dir, launcher, Progress(64, enabled=False)).run()
    agents = summary["agents"]
    assert {a["state"] for a in agents.values()} == {"stopped"}, agents
    assert agents[OUTSIDE]["steps"] == 300 and agents["l1"]["steps"] == 300
    assert not any(a["rejected"] for a in agents.values()), agents  # every message it sent fit
    assert summary["control_rejected"] == {}
    # Trained through it: 8x8 digits reach well above chance (10%) in 300 locked steps.
    assert summary["metrics"]["test_accuracy"] > 0.8, summary["metrics"]


def test_the_outside_agent_uses_no_synthgrad_code():
    tree = ast.parse(CLIENT.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported == {"os", "struct", "sys", "time", "msgpack", "numpy", "zmq"}

"""Non-finite values are caught at the agent (run.on_nonfinite), and bounded caches that drop
something say so: in the metrics, summary.json and the CLI's last lines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.core import CONTROL
from synthgrad.agents.runtime.local import LocalRunner, run_locally
from synthgrad.agents.runtime.nonfinite import NonFiniteError, NonFiniteGuard
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import plan_run

from ..conftest import EXAMPLES

SMALL = ['agents.source.dataset="digits"', "run.batch_size=64", "run.eval_batch_size=359"]
# Plain SGD at a learning rate of a million: the chain is NaN within a few steps.
DIVERGES = [*SMALL, 'run.optimizer="sgd"', "run.lr=1e6", "run.steps=40", "run.eval_every=0"]


def test_the_guard_passes_finite_values_through_untouched():
    guard = NonFiniteGuard("l1", "stop")
    x = torch.randn(4, 3)
    assert guard.check(x, 0, "loss", "task loss") is x and guard.metrics() == {}


def test_stop_raises_naming_agent_step_and_quantity():
    with pytest.raises(NonFiniteError, match=r"agent 'l2', step 7: the synthetic gradient \(l2->l3\) is not finite") as err:
        NonFiniteGuard("l2", "stop").check(torch.tensor([1.0, math.nan]), 7, "synthetic_gradient", "l2->l3")
    assert (err.value.agent, err.value.step, err.value.quantity) == ("l2", 7, "synthetic_gradient")
    assert "run.on_nonfinite" in str(err.value)


def test_warn_uses_the_value_and_skip_uses_zeros_both_counting_it():
    bad = torch.tensor([math.inf, 2.0])
    warn, skip = NonFiniteGuard("a", "warn"), NonFiniteGuard("a", "skip")
    assert warn.check(bad, 0, "gradient", "from l3") is bad
    assert torch.equal(skip.check(bad, 0, "gradient", "from l3"), torch.zeros(2))
    skip.check(bad, 1, "gradient", "from l3")
    assert warn.metrics() == {"nonfinite.gradient": 1} and skip.metrics() == {"nonfinite.gradient": 2}
    with pytest.raises(ValueError, match="run.on_nonfinite"):
        NonFiniteGuard("a", "ignore")


def _plan(*overrides):
    return plan_run(load_topology(EXAMPLES / "mnist_dni.toml", [*DIVERGES, *overrides]))


def test_a_diverging_run_stops_at_the_agent_by_default():
    with pytest.raises(NonFiniteError, match=r"agent '\w+', step \d+: the \w[\w ]* \(.+\) is not finite"):
        run_locally(_plan())


class Watcher(LocalRunner):
    """A `LocalRunner` that counts the data messages holding a non-finite tensor."""

    nonfinite_sent = 0

    def _route(self) -> None:
        for core in self.cores.values():
            for dest, _, msg in core.outbox:
                if dest != CONTROL and any(not np.isfinite(t).all() for t in msg.tensors.values() if t.dtype.kind == "f"):
                    self.nonfinite_sent += 1
        super()._route()


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_warn_and_skip_train_on_and_count(policy):
    plan = _plan(f'run.on_nonfinite="{policy}"')
    runner = Watcher({name: build_core(plan.agents[name]) for name in plan.order})
    runner.run()
    counts = {name: core.guard.metrics() for name, core in runner.cores.items() if hasattr(core, "guard")}
    assert any(counts.values()), counts
    assert runner.source.steps == 40 and runner.evaluations()[-1]["final"]
    if policy == "skip":  # zeros instead: nothing non-finite went on to a peer
        assert runner.nonfinite_sent == 0
    else:  # warn uses the values: they travel on
        assert runner.nonfinite_sent > 0


@pytest.mark.slow
def test_the_cli_exits_1_with_the_agent_named_and_writes_summary_json(cli, tmp_path):
    proc = cli("run", str(EXAMPLES / "mnist_dni.toml"), *[a for o in DIVERGES for a in ("--set", o)], "--runs-dir", "runs")
    assert proc.returncode == 1, proc.stderr
    assert "is not finite" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert "is not finite" in summary["error"] and "run.on_nonfinite" in summary["error"]


@pytest.mark.slow
def test_a_cache_that_drops_gradient_targets_is_reported_with_its_option(cli, tmp_path):
    overrides = [*SMALL, "run.steps=300", "run.eval_every=0", "links.1.sg.cache=1"]
    proc = cli("run", str(EXAMPLES / "mnist_dni.toml"), *[a for o in overrides for a in ("--set", o)], "--runs-dir", "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    dropped = summary["agents"]["l1"]["dropped"]["sg_cache.links.1"]
    assert 0 < dropped < 300, summary["agents"]["l1"]
    assert f"l1 dropped {dropped:,} gradient targets" in proc.stderr and "raise links.1.sg.cache" in proc.stderr
    assert not summary["agents"]["l2"]["dropped"]  # links.2 keeps its default cache of 64

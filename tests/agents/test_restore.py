"""Checkpoint state in one process: a restored agent continues exactly where it stopped,
a torn file is refused, and a restarted peer's gradient waits are given up."""

from __future__ import annotations

import pytest
import torch
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.checkpoint import CheckpointError, load_verified, save_atomic
from synthgrad.agents.runtime.local import LocalRunner
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import plan_run

from ..conftest import EXAMPLES

DIGITS = ['agents.source.dataset="digits"', "run.batch_size=32", "run.eval_batch_size=400", "run.lr=3e-3", "run.steps=40"]
SMALL = ["agents.l1.width=32", "agents.l2.width=32", "agents.l3.width=32"]


def _plan(example: str, *overrides: str):
    return plan_run(load_topology(EXAMPLES / example, [*DIGITS, *SMALL, *overrides]))


def _cores(plan):
    return {name: build_core(plan.agents[name]) for name in plan.order}


@pytest.mark.parametrize("example", ["mnist_cdni.toml", "mnist_backprop.toml", "mnist_unlocked.toml"])
def test_a_run_restored_from_a_mid_run_cut_ends_bit_for_bit_like_the_uninterrupted_one(tmp_path, example):
    torch.set_num_threads(1)
    plan = _plan(example, "run.seed=3")
    whole = LocalRunner(_cores(plan))
    whole.run()
    first = LocalRunner(_cores(plan))
    first.run(until_step=17)
    files = {}
    for name, core in first.cores.items():
        files[name] = (tmp_path / f"{name}.pt", save_atomic(tmp_path / f"{name}.pt", core.state_dict()))
        assert core.clock == 16, f"{name} was not at the cut"
    restored = _cores(plan)
    for name, core in restored.items():
        core.load_state_dict(load_verified(*files[name]))
    again = LocalRunner(restored)
    again.run()
    assert again.evaluations()[-1] == whole.evaluations()[-1]
    assert restored["source"].steps == 40
    for name, core in restored.items():
        if core.is_source:
            continue
        want = whole.cores[name].agent.module.state_dict()
        for key, value in core.agent.module.state_dict().items():
            assert torch.equal(value, want[key]), f"{name}.{key} differs after the restore"


def test_a_torn_or_changed_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "l1.pt"
    sha = save_atomic(path, {"steps": 3, "w": torch.ones(4)})
    assert load_verified(path, sha)["steps"] == 3
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file was left behind"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="l1.pt is corrupt"):
        load_verified(path, sha)
    path.write_bytes(bytes(data[:100]))  # torn: only its start was written
    with pytest.raises(CheckpointError, match="corrupt"):
        load_verified(path, sha)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_verified(tmp_path / "missing.pt", sha)


def test_a_step_parked_for_a_restarted_peer_is_released_and_counted():
    torch.set_num_threads(1)
    cores = _cores(_plan("mnist_backprop.toml"))
    source, l1 = cores["source"], cores["l1"]
    source.produce()
    for dest, _plane, msg in source.outbox:
        if dest == "l1":
            l1.on_forward(msg)
    assert l1.parked and not l1.ready and l1.steps == 0  # locked: waits for l2's gradient
    assert l1.abandon("l3") == 0  # not a peer it waits on
    assert l1.abandon("l2") == 1
    assert not l1.parked and l1.ready and l1.steps == 1
    assert l1.take_metrics()["dropped.gradient_wait.l2"] == 1


def test_a_restored_agent_takes_the_next_step_its_peers_went_on_to():
    """After a restore its peers are ahead (they trained on while it was down): the first
    input far past its own clock is taken, not refused as too far ahead."""
    torch.set_num_threads(1)
    plan = _plan("mnist_cdni.toml")
    cores = _cores(plan)
    state = cores["head"].state_dict()
    head = build_core(plan.agents["head"])
    head.load_state_dict(state)
    source = cores["source"]
    source._next_step = 3000  # past the step window (1024): its peers went on for a while
    source.produce()
    for dest, _plane, msg in source.outbox:
        if dest == "head":
            head.on_forward(msg)
    assert head.rejects == {}
    fresh = build_core(plan.agents["head"])  # without the restore the same message is refused
    for dest, _plane, msg in source.outbox:
        if dest == "head":
            fresh.on_forward(msg)
    assert fresh.rejects == {"step": 1}

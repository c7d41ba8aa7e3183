"""Ticks: a slow agent acts exactly once per block of T steps, gradients and targets go back
under the steps they belong to, and a locked sender runs ahead to fill the slow agent's block.

The two-timescale topology (examples/two_timescale.toml) on scikit-learn digits with small
widths, in one process (`LocalRunner`, the very `AgentCore`s of a process run); every
message the agents send is recorded on its way.
"""

from __future__ import annotations

import pytest
import torch
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.local import LocalRunner
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.plan import plan_run
from synthgrad.protocol.kinds import Kind

from ..conftest import EXAMPLES

TOPOLOGY = EXAMPLES / "two_timescale.toml"
SMALL = [
    "agents.digits.dataset=digits", "run.batch_size=8", "run.eval_batch_size=8", "agents.digits.eval_steps=16",
    "agents.fast.fcn=16", "agents.fast.hidden=16", "agents.fast.message=4", "agents.slow.hidden=16",
]
STEPS = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder(LocalRunner):
    """A `LocalRunner` that keeps every data message it routes, as (sender, dest, message)."""

    def __init__(self, cores):
        super().__init__(cores)
        self.sent = []

    def _route(self):
        for name, core in self.cores.items():
            self.sent += [(name, dest, msg) for dest, _, msg in core.outbox if dest in self.cores]
        super()._route()


def run(mode: str, *overrides: str) -> Recorder:
    plan = plan_run(load_topology(TOPOLOGY, [*SMALL, f"run.steps={STEPS}", "run.eval_every=32", f"links.1.mode={mode}", *overrides]))
    cores = {n: build_core(plan.agents[n]) for n in plan.order}
    runner = Recorder(cores)
    runner.run()
    return runner


def steps_of(runner: Recorder, src: str, dest: str, kind: Kind, train: bool = True) -> list[int]:
    return [m.step for s, d, m in runner.sent if s == src and d == dest and m.kind == kind and ("eval" in m.meta) != train]


@pytest.mark.parametrize("mode", ["dni", "cdni", "backprop"])
def test_slow_agent_acts_once_per_block_and_gradients_come_back_to_their_step(mode):
    # cdni: the SG model on A's message reads the 4 stacked digit labels of A's block too.
    runner = run("dni", "links.1.sg.context=true") if mode == "cdni" else run(mode)
    fast, slow = runner.cores["fast"], runner.cores["slow"]
    # Step ids are the source's clock: training 0-31, evaluation 32-47, training 48-79, then the
    # final evaluation.  A acts on the last step of each block of 4, B of each block of 16.
    assert (fast.steps, slow.steps) == (STEPS // 4, STEPS // 16)
    acts = steps_of(runner, "fast", "slow", Kind.ACT)
    assert acts == [*range(3, 32, 4), *range(51, 80, 4)]
    # Evaluation (two rounds of 16 steps) flows through the same blocks, with no update.
    assert len(steps_of(runner, "fast", "slow", Kind.ACT, train=False)) == 2 * 16 // 4
    # B splits the gradient of its stacked input: one target per A message, under its step,
    # shaped like that message.
    grads = [(m.step, m.tensors["g"].shape) for s, d, m in runner.sent if s == "slow" and m.kind == Kind.GRAD]
    assert sorted(step for step, _ in grads) == acts
    assert {shape for _, shape in grads} == {(8, 4, 4)}
    assert fast.rejected == slow.rejected == 0  # every target met its cached or parked step
    assert not fast.parked and not fast.pending and not slow.pending and not fast.in_steps
    (sender,) = fast.senders.values()
    if mode != "backprop":
        assert fast.updates == STEPS // 4  # A never waits for B
        assert len(sender.cache) == 0 and sender.cache.evicted == 0
    else:
        assert fast.updates == STEPS // 16  # locked: one update per B block, after B's gradient


@pytest.mark.parametrize("extra, kind", [("links.1.sg.host=receiver", Kind.SYNTH_GRAD), ("links.1.sg.lam=0.5", Kind.GRAD)])
def test_waiting_dni_variants_run_ahead_over_the_slow_block(extra, kind):
    # A receiver-hosted SG answers only when B acts, and BP(lambda) needs B's true gradient:
    # either way A parks its ticks until B's block is complete, then updates once.
    runner = run("dni", extra)
    fast = runner.cores["fast"]
    assert (fast.steps, fast.updates) == (STEPS // 4, STEPS // 16)
    answers = sorted(m.step for s, _, m in runner.sent if s == "slow" and m.kind == kind)
    assert answers == steps_of(runner, "fast", "slow", Kind.ACT)
    assert fast.rejected == runner.cores["slow"].rejected == 0 and not fast.parked


def test_none_link_sends_no_gradient_and_a_still_acts_every_tick():
    runner = run("none")
    assert not [m for s, _, m in runner.sent if s == "slow" and m.kind == Kind.GRAD]
    assert runner.cores["fast"].updates == STEPS // 4 and runner.cores["slow"].steps == STEPS // 16


def test_locked_run_ahead_matches_one_backward_over_the_block():
    """Locked A, run ahead over B's block, ends with the parameters of a hand-made update:
    one backward through A's four blocks with B's true gradient, one Adam step."""
    runner = run("backprop", "run.eval_every=0", "run.steps=16")
    fast = runner.cores["fast"]
    assert fast.updates == 1
    grads = {m.step: torch.from_numpy(m.tensors["g"]) for s, _, m in runner.sent if s == "slow" and m.kind == Kind.GRAD}
    plan = plan_run(load_topology(TOPOLOGY, [*SMALL, "run.steps=16", "run.eval_every=0", "links.1.mode=backprop"]))
    twin = build_core(plan.agents["fast"])
    xs = [(m.step, m.tensors["x"]) for s, d, m in runner.sent if d == "fast" and m.port == "x" and "eval" not in m.meta]
    odd = {m.step: m.tensors["x"] for s, d, m in runner.sent if d == "fast" and m.port == "odd" and "eval" not in m.meta}
    total = 0.0
    for block in range(4):
        steps = [s for s, _ in xs][block * 4 : block * 4 + 4]
        x = torch.stack([torch.from_numpy(a) for _, a in xs[block * 4 : block * 4 + 4]], 1)
        out = twin.agent.forward({"x": x})
        loss, _ = twin.agent.loss(out, {"odd": torch.stack([torch.from_numpy(odd[s]) for s in steps], 1)})
        total = total + loss + (out["message"] * grads[steps[-1]]).sum()
    total.backward()
    twin.optimizer.step()
    for (name, got), want in zip(fast.agent.module.state_dict().items(), twin.agent.module.state_dict().values(), strict=True):
        assert torch.allclose(got.float(), want.float(), atol=1e-6), name


@pytest.mark.parametrize(
    "override, key",
    [
        ("agents.slow.tick_every=6", "agents.slow.tick_every"),  # not a multiple of its sender's 4
        ("agents.fast.tick_every=32", "agents.slow.tick_every"),  # B faster than A, its sender
        ("agents.digits.tick_every=2", "agents.digits.tick_every"),
        ("run.steps=100", "run.steps"),
        ("run.eval_every=40", "run.eval_every"),
        ("agents.digits.eval_steps=24", "agents.digits.eval_steps"),
        ("agents.digits.eval_steps=48", "agents.digits.eval_steps"),  # 48 x 250 > 10000 test digits
        ("agents.digits.length=6", "agents.digits.length"),  # A's 4-step messages straddle episodes
        ("agents.digits.length=0", "agents.digits.length"),
        ("agents.slow.unroll=3", "agents.slow.unroll"),
        ("links.1.mode=unlocked", "links.1.mode"),
    ],
)
def test_ticks_that_cannot_line_up_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        plan_run(load_topology(TOPOLOGY, [override]))
    assert err.value.key == key


def test_epochs_with_ticks_are_refused(tmp_path):
    text = TOPOLOGY.read_text().replace("steps = 6400", "epochs = 1")
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        plan_run(load_topology(path))
    assert err.value.key == "run.epochs"


@pytest.mark.timeout(60)
def test_cli_refuses_misaligned_ticks_with_exit_2(cli):
    proc = cli("run", str(TOPOLOGY), "--set", "agents.slow.tick_every=6", timeout=60)
    assert proc.returncode == 2
    assert "agents.slow.tick_every" in proc.stderr


def test_check_agent_passes_on_the_two_timescale_kinds():
    from synthgrad.agents import check_agent
    from synthgrad.agents.kinds.timescale import DigitStream, FastCounter, SlowCounter

    check_agent(DigitStream, {"dataset": "digits", "length": 4, "eval_steps": 8})
    small = {"fcn": 8, "hidden": 8, "message": 4}
    # The checker acts at tick 1 (one label per row), so the kinds are checked unstacked.
    check_agent(FastCounter, small, in_shapes={"x": (65,)})
    check_agent(SlowCounter, {"hidden": 8, "unroll": 1}, in_shapes={"message": (4,), "reset": ()})

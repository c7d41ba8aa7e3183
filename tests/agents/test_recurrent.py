"""The `rnn` kind and the sequence sources: truncated BPTT, the synthetic gradient at the window
edge and its bootstrapped target, state carried across windows, and short Copy runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthgrad.agents import check_agent
from synthgrad.agents.kinds.recurrent import RNN
from synthgrad.agents.kinds.sequence_source import CopyTaskSource, TextSource
from synthgrad.agents.runtime.local import run_locally
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import plan_run

from ..conftest import EXAMPLES, last_json

WIDTH, T, B, UNITS = 3, 3, 4, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def windows(n: int, seed: int = 0):
    """`n` Copy windows (x with reset channel, y, mask) from a copy_task source."""
    source = CopyTaskSource("data", {"width": WIDTH, "length": 2, "window": T})
    source.open(B, seed)
    out = []
    for _ in range(n):
        batch = source.train_batch()
        out.append({k: torch.from_numpy(v) for k, v in batch.items()})
    return out


def make_agent(**params) -> RNN:
    torch.manual_seed(0)
    agent = RNN("lstm", {"hidden": UNITS, "width": WIDTH, **params})
    agent.build({"x": (T, WIDTH + 2)})
    return agent


def train(agent: RNN, data, lr: float = 1e-2) -> None:
    """What the runtime does for a terminal agent: forward, loss, backward, Adam step."""
    opt = torch.optim.Adam(agent.module.parameters(), lr=lr)
    for batch in data:
        out = agent.forward({"x": batch["x"]})
        loss, _ = agent.loss(out, {"y": batch["y"], "mask": batch["mask"]})
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_check_agent_passes_on_the_new_kinds():
    check_agent(CopyTaskSource, {"width": 4, "window": 3})
    check_agent(CopyTaskSource, {"task": "repeat_copy", "width": 4, "window": 3})
    check_agent(TextSource, {"window": 5})
    for params in ({}, {"sg": False}, {"aux": True, "sg_to_core": True}):
        check_agent(RNN, {"objective": "chars", "hidden": 8, **params}, in_shapes={"x": (3, 11)})
    check_agent(RNN, {"task": "copy", "width": 4, "hidden": 8, "aux": True}, in_shapes={"x": (3, 6)})


def test_sg_off_equals_hand_written_truncated_bptt():
    data = windows(6)
    agent = make_agent(sg=False)
    cell, readout = copy.deepcopy(agent.module.cell), copy.deepcopy(agent.module.readout)
    train(agent, data)
    params = [*cell.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    h = c = torch.zeros(B, UNITS)
    for batch in data:
        x, reset = batch["x"][..., :-1], batch["x"][..., -1]
        logits = []
        for t in range(T):
            keep = (1 - reset[:, t]).unsqueeze(1)
            h, c = cell(x[:, t], (h * keep, c * keep))
            logits.append(readout(h))
        per = F.binary_cross_entropy_with_logits(torch.stack(logits, 1), batch["y"], reduction="none").sum(-1)
        ((per * batch["mask"]).sum() / B).backward()
        opt.step()
        opt.zero_grad()
        h, c = h.detach(), c.detach()  # truncation: no gradient crosses the window edge
    for got, want in zip([*agent.module.cell.parameters(), *agent.module.readout.parameters()], params, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_untrained_sg_is_zero_so_the_first_window_is_bptt():
    batch = windows(1)[0]
    grads = {}
    for sg in (False, True):
        agent = make_agent(sg=sg)
        out = agent.forward({"x": batch["x"]})
        if sg:
            s = torch.cat([agent.window["h"], agent.window["c"]], 1)
            assert torch.count_nonzero(agent.module.sg(s)) == 0
        loss, _ = agent.loss(out, {"y": batch["y"], "mask": batch["mask"]})
        loss.backward()
        grads[sg] = [p.grad.clone() for p in (*agent.module.cell.parameters(), *agent.module.readout.parameters())]
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("boot", [None, 1.0])
def test_bootstrapped_target_is_the_gradient_at_the_next_windows_initial_state(boot):
    """sg_bootstrap=None: the target is what the next window's backward left at its initial
    state. 1.0: the same gradient with that window's SG counted at 1.0 instead of sg_scale,
    while the core still receives sg_scale times the SG."""
    data = windows(3)
    agent = make_agent(sg_scale=0.5, sg_bootstrap=boot)
    torch.nn.init.normal_(agent.module.sg.net[-1].weight, std=0.1)  # a non-zero SG, so it counts
    module0 = copy.deepcopy(agent.module)
    # Window 1, by hand with no update, then window 2 through the agent.
    for batch in data[:1]:
        out = agent.forward({"x": batch["x"]})
        loss, _ = agent.loss(out, {"y": batch["y"], "mask": batch["mask"]})
        loss.backward()
    h1, c1 = (s.clone() for s in agent.state)
    agent.module.zero_grad()
    out = agent.forward({"x": data[1]["x"]})
    loss, _ = agent.loss(out, {"y": data[1]["y"], "mask": data[1]["mask"]})
    loss.backward()
    # Independently: d(window-2 loss + its synthetic gradient at its end) / d(h1, c1).
    s0 = torch.cat([h1, c1], 1).requires_grad_(True)
    x, reset = data[1]["x"][..., :-1], data[1]["x"][..., -1]
    hs, h, c = module0.run(x, reset, s0[:, :UNITS], s0[:, UNITS:])
    per = F.binary_cross_entropy_with_logits(module0.readout(hs), data[1]["y"], reduction="none").sum(-1)
    task = (per * data[1]["mask"]).sum() / B
    s_T = torch.cat([h, c], 1)
    synthetic = module0.sg(s_T.detach()).detach() / B
    (injected,) = torch.autograd.grad(task + 0.5 * (s_T * synthetic).sum(), s0, retain_graph=True)
    got = torch.cat([agent.window["h0"].grad, agent.window["c0"].grad], 1)
    assert torch.allclose(got, injected, atol=1e-6)
    (target,) = torch.autograd.grad(task + (boot or 0.5) * (s_T * synthetic).sum(), s0)
    assert target.abs().sum() > 0
    # Window 3's loss regresses M(h1, c1) onto that target, at per-example scale.
    out = agent.forward({"x": data[2]["x"]})
    _, metrics = agent.loss(out, {"y": data[2]["y"], "mask": data[2]["mask"]})
    want = F.mse_loss(agent.module.sg(s0.detach()), target * B)
    assert metrics["sg_loss"] == pytest.approx(want.item(), rel=1e-5)


def test_sg_to_core_lets_the_regression_loss_reach_the_core():
    data = windows(3)
    grads = {}
    for to_core in (False, True):
        agent = make_agent(sg_to_core=to_core)
        torch.nn.init.normal_(agent.module.sg.net[-1].weight, std=0.1)
        for batch in data:
            agent.module.zero_grad()
            out = agent.forward({"x": batch["x"]})
            loss, metrics = agent.loss(out, {"y": batch["y"], "mask": batch["mask"]})
            loss.backward()
        assert "sg_loss" in metrics
        grads[to_core] = agent.module.cell.weight_hh.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_state_carries_across_windows_and_resets_on_episode_start():
    agent = make_agent(sg=False)
    x = torch.rand(B, T, WIDTH + 2)
    x[..., -1] = 0
    first = agent.forward({"x": x})["logits"]
    carried = agent.forward({"x": x})["logits"]
    assert not torch.allclose(first, carried)  # same input, carried state: different output
    x_reset = x.clone()
    x_reset[0, 0, -1] = 1.0  # row 0 starts an episode at the window's first step
    again = agent.forward({"x": x_reset})["logits"]
    assert torch.allclose(again[0], first[0], atol=1e-6)  # row 0 as from a zero state
    assert not torch.allclose(again[1], first[1])
    agent.module.eval()  # evaluation keeps its own state and leaves training's alone
    state = [s.clone() for s in agent.state]
    with torch.no_grad():
        assert torch.allclose(agent.forward({"x": x})["logits"], first, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(state, agent.state, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("sg", ["true", "false"])
def test_short_copy_run_solves_length_one(sg):
    overrides = [
        "run.steps=300", "run.eval_every=0", "run.eval_batch_size=64", "agents.clock.eval_windows=12",
        "agents.lstm.hidden=64", "agents.lstm.curriculum_sequences=128", f"agents.lstm.sg={sg}",
    ]
    runner = run_locally(plan_run(load_topology(EXAMPLES / "copy_dni.toml", overrides)))
    lstm = runner.cores["lstm"].agent
    curriculum = lstm.own["curriculum"]
    # Random guessing makes 4 bit errors per Copy N=1 sequence of width 8; the level is solved
    # below 0.15, and the curriculum moves on to N = 2.
    assert (1,) in curriculum.solved
    (final,) = runner.evaluations()
    assert final["final"] and 0.0 <= final["test_loss"]


@pytest.mark.slow
def test_copy_dni_example_runs_as_processes(cli):
    sets = ["run.steps=30", "run.eval_every=15", "run.eval_batch_size=32", "agents.clock.eval_windows=6",
            "agents.lstm.hidden=16"]
    proc = cli("run", str(EXAMPLES / "copy_dni.toml"), *sum((["--set", s] for s in sets), []), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["steps"] == 30
    assert np.isfinite(summary["metrics"]["test_loss"])

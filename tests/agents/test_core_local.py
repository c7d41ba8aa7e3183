"""Complete unlock (mode `unlocked`) in one process, and the new modes across processes.

The single-process tests use `run_locally` on `digits`; the `slow` ones run `synthgrad run`
with real agent processes on the same small set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.local import run_locally
from synthgrad.agents.runtime.synthetic_input import DATA_PORT
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.plan import plan_run
from synthgrad.protocol.kinds import Kind
from synthgrad.protocol.message import Message

from ..conftest import EXAMPLES, last_json

DIGITS = [
    'agents.source.dataset="digits"',
    "run.batch_size=64",
    "run.eval_batch_size=400",
    "run.lr=3e-3",
]
SMALL = ["agents.l1.width=64", "agents.l2.width=64", "agents.l3.width=64", "link_defaults.sg.input_hidden=[64]"]


def unlocked_plan(*overrides: str):
    return plan_run(load_topology(EXAMPLES / "mnist_unlocked.toml", [*DIGITS, *SMALL, *overrides]))


def test_unlocked_layers_get_the_data_and_the_first_layer_does_not():
    plan = unlocked_plan()
    for name in ("l2", "l3", "head"):
        ports = {link.dst_port: link for link in plan.agents[name].in_links}
        assert ports[DATA_PORT].src == "source" and ports[DATA_PORT].context
        assert plan.agents[name].in_shapes[DATA_PORT] == (64,)
    assert DATA_PORT not in plan.agents["l1"].in_shapes  # its input is the data itself


def test_unlocked_learns_well_above_chance():
    torch.set_num_threads(1)
    runner = run_locally(unlocked_plan("run.steps=300"))
    assert runner.evaluations()[-1]["test_accuracy"] > 0.8  # chance: 0.1
    # Every upstream SG model got its target for every step (none dropped, none early).
    assert [runner.cores[n].senders[i].hosted.loss_count for n, i in (("l1", 1), ("l2", 2), ("l3", 3))] == [300] * 3
    for upstream, name in (("l1", "l2"), ("l2", "l3"), ("l3", "head")):
        core = runner.cores[name]
        assert core.steps == 300 and core.rejected == 0 and not core.unlocked.pending
        assert f"si_loss.{upstream}->{name}" in core.take_metrics()


def test_unlocked_runs_are_reproducible_with_evaluations_between_steps():
    a, b = (run_locally(unlocked_plan("run.steps=20", "run.eval_every=10")) for _ in range(2))
    assert [e["train_steps"] for e in a.evaluations()] == [10, 20]
    assert a.evaluations() == b.evaluations()
    for name in ("l1", "l2", "l3", "head"):
        for (key, x), (_, y) in zip(
            a.cores[name].agent.module.state_dict().items(), b.cores[name].agent.module.state_dict().items(), strict=True
        ):
            assert torch.equal(x, y), f"{name}.{key}"


def _feed(order: str, steps: int = 4):
    """One unlocked layer (l2) fed the same messages in a different arrival order."""
    torch.set_num_threads(1)
    core = build_core(unlocked_plan(f"run.steps={steps}").agents["l2"])
    rng = np.random.default_rng(0)
    msgs = {
        s: {
            DATA_PORT: rng.random((8, 64), dtype=np.float32),
            "labels": rng.integers(0, 10, 8),
            "in": rng.random((8, 64), dtype=np.float32),
        }
        for s in range(steps)
    }
    srcs = {DATA_PORT: "source", "labels": "source", "in": "l1"}
    if order == "in_order":
        sequence = [(s, p) for s in range(steps) for p in (DATA_PORT, "labels", "in")]
    else:  # every real input first (a slow source link), then the data, newest first
        sequence = [(s, "in") for s in range(steps)] + [(s, p) for s in reversed(range(steps)) for p in ("labels", DATA_PORT)]
    sent = []
    for step, port in sequence:
        kind = Kind.ACT if port == "in" else Kind.CTX
        core.on_forward(Message(kind=kind, src=srcs[port], port=port, step=step, tensors={"x": msgs[step][port]}))
        sent += [(dest, m.kind, m.step, m.tensors["g" if "g" in m.tensors else "x"].copy()) for dest, _, m in core.outbox]
        core.outbox.clear()
    return core, sorted(sent, key=lambda item: (item[2], item[0]))


def test_an_unlocked_layer_does_not_depend_on_arrival_order():
    a, sent_a = _feed("in_order")
    b, sent_b = _feed("reordered")
    assert a.steps == b.steps == 4 and a.unlocked.cursor == b.unlocked.cursor == 4
    assert [(d, k, s) for d, k, s, _ in sent_a] == [(d, k, s) for d, k, s, _ in sent_b]
    assert {k for _, k, _, _ in sent_a} == {Kind.ACT, Kind.GRAD}
    assert all(np.array_equal(x, y) for (*_, x), (*_, y) in zip(sent_a, sent_b, strict=True))
    for (key, x), (_, y) in zip(a.state_dict()["module"].items(), b.state_dict()["module"].items(), strict=True):
        assert torch.equal(x, y), key


def test_an_unlocked_layer_waits_for_the_previous_real_input_only():
    core = build_core(unlocked_plan("run.steps=4").agents["l2"])
    x = np.zeros((8, 64), np.float32)
    for step in (0, 1):
        for port in (DATA_PORT, "labels"):
            value = x if port == DATA_PORT else np.zeros(8, np.int64)
            core.on_forward(Message(kind=Kind.CTX, src="source", port=port, step=step, tensors={"x": value}))
    assert core.steps == 1 and not core.outbox  # A(0) ran; A(1) waits for h(0); nothing sent yet
    core.on_forward(Message(kind=Kind.ACT, src="l1", port="in", step=0, tensors={"x": x}))
    assert core.steps == 2  # B(0) sent the real output and the target, then A(1) ran
    assert sorted((m.kind, m.step) for _, _, m in core.outbox) == [(Kind.ACT, 0), (Kind.GRAD, 0)]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (['links.2.sg.host="receiver"'], "links.2.sg.host"),
        (['links.2.mode="backprop"'], "links.2.mode"),
        (["links.2.lambda=0.5"], "links.2.sg.lam"),
        (['links.2.mode="dni"', 'links.2.sg.host="receiver"'], "links.2.sg.host"),
    ],
)
def test_an_unlocked_layer_cannot_wait_for_gradients(overrides, key):
    with pytest.raises(ConfigError) as err:
        plan_run(load_topology(EXAMPLES / "mnist_unlocked.toml", overrides))
    assert err.value.key == key


# ----------------------------------------------------------------- across processes
PROCESS = ["--set", 'agents.source.dataset="digits"', "--set", "run.batch_size=64", "--set", "run.eval_batch_size=400"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "extra", "threshold"),
    [
        ("mnist_unlocked.toml", ["run.steps=300", "run.lr=3e-3"], 0.8),
        ("mnist_cnn_cdni.toml", ["run.steps=300", "run.lr=3e-3", "agents.c1.channels=8", "agents.c2.channels=16"], 0.8),
        ("mnist_dni.toml", ["run.steps=300", "run.lr=3e-3", "link_defaults.lambda=0.5", "link_defaults.p_update=0.5"], 0.8),
    ],
    ids=["unlocked", "cnn-cdni", "bp-lambda-sparse"],
)
def test_new_modes_run_across_processes(cli, example, extra, threshold):
    proc = cli("run", str(EXAMPLES / example), *PROCESS, *sum((["--set", o] for o in extra), []), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    steps = int(extra[0].split("=")[1])
    assert all(a["steps"] == steps for a in summary["agents"].values())
    assert summary["metrics"]["test_accuracy"] > threshold
    if example == "mnist_unlocked.toml":  # the input models are saved with their layer
        final = torch.load(Path(summary["run_dir"]) / "agents" / "l2" / "final.pt", weights_only=True)
        assert set(final["synthetic_inputs"]) == {"in"}

"""Messages that do not fit the plan are dropped and counted by reason; the agent lives on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from synthgrad.agents.runtime.admission import Admission
from synthgrad.agents.runtime.build import build_core
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import plan_run
from synthgrad.protocol import Kind, Message, connect_push, new_context, send_message

from ..conftest import EXAMPLES, last_json

SMALL = ['agents.source.dataset="digits"', "run.batch_size=64", "run.eval_batch_size=359"]


def _plan(*overrides):
    return plan_run(load_topology(EXAMPLES / "mnist_dni.toml", [*SMALL, *overrides]))


def _act(src="l1", port="in", x=None, step=0, kind=Kind.ACT, name="x", run=""):
    x = np.zeros((64, 256), np.float32) if x is None else x
    return Message(kind, src=src, port=port, step=step, tensors={name: x}, run=run)


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (_act(), None),
        (_act(x=np.zeros((7, 256), np.float32)), None),  # the batch dimension is free
        (_act(src="l3"), "sender"),
        (_act(port="labels"), "port"),
        (_act(name="y"), "tensor"),
        (_act(x=np.zeros((64, 256), np.int32)), "dtype"),
        (_act(x=np.zeros((64, 100), np.float32)), "shape"),
        (_act(x=np.zeros((64,), np.float32)), "shape"),
        (_act(x=np.zeros((5000, 256), np.float32)), "shape"),  # larger than any batch of the run
        (_act(kind=Kind.GRAD), "kind"),
    ],
)
def test_forward_messages_are_checked_against_the_plan(msg, reason):
    assert Admission(_plan().agents["l2"]).forward(msg) == reason


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (_act(src="l3", port="out", kind=Kind.GRAD, name="g"), None),
        (_act(src="l3", port="out", kind=Kind.ACT, name="g"), "kind"),
        (_act(src="source", port="out", kind=Kind.GRAD, name="g"), "sender"),
        (_act(src="l3", port="logits", kind=Kind.GRAD, name="g"), "port"),
        (_act(src="l3", port="out", kind=Kind.GRAD, name="g", x=np.zeros((64, 9), np.float32)), "shape"),
    ],
)
def test_backward_messages_are_checked_against_the_plan(msg, reason):
    assert Admission(_plan().agents["l2"]).backward(msg) == reason


def test_a_gradient_on_a_link_that_carries_none_is_of_the_wrong_kind():
    admission = Admission(_plan("links.2.mode=\"none\"").agents["l2"])  # l2 -> l3 carries no gradient
    assert admission.backward(_act(src="l3", port="out", kind=Kind.GRAD, name="g")) == "kind"


def test_the_stepper_refuses_done_repeated_far_and_mismatched_steps():
    core = build_core(_plan("run.steps=10").agents["l2"])
    core.on_forward(_act(step=0))
    assert core.steps == 1 and core.last_block == 0
    core.on_forward(_act(step=0))  # done already
    core.on_forward(_act(step=10**9))  # too far ahead to be real
    assert core.rejects == {"step": 2} and core.steps == 1
    # A target shaped unlike the activation it claims to be for leaves the SG cache alone.
    core.on_backward(_act(src="l3", port="out", kind=Kind.GRAD, name="g", x=np.zeros((3, 256), np.float32)))
    assert core.rejects == {"step": 2, "shape": 1}
    core.on_backward(_act(src="l3", port="out", kind=Kind.GRAD, name="g"))
    assert core.rejects == {"step": 2, "shape": 1}  # the real target still trains the SG model
    metrics = core.take_metrics()
    assert metrics["rejected"] == 3 and metrics["rejected.step"] == 2 and metrics["rejected.shape"] == 1


def test_ports_that_disagree_on_the_batch_drop_the_step():
    core = build_core(_plan("run.steps=10").agents["head"])
    core.on_forward(_act(src="l3", x=np.zeros((64, 256), np.float32)))
    core.on_forward(Message(Kind.CTX, src="source", port="labels", step=0, tensors={"x": np.zeros(32, np.int64)}))
    assert core.steps == 0 and core.rejects == {"shape": 1}


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_running_agent_survives_hostile_messages_and_the_run_reports_them(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(EXAMPLES / "mnist_dni.toml"),
         *[arg for o in [*SMALL, "run.steps=3000"] for arg in ("--set", o)], "--runs-dir", str(runs), "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ctx = new_context()
    try:
        started = _wait_for(lambda: any(p.stat().st_size for p in runs.glob("*/metrics.jsonl")), 90)
        assert started, "the run never started training"
        run_dir = next(runs.glob("*"))
        ipc = json.loads((run_dir / "agents.json").read_text())["ipc_dir"]
        run = run_dir.name
        fwd = connect_push(ctx, f"ipc://{ipc}/l2.f")
        bwd = connect_push(ctx, f"ipc://{ipc}/l2.b")
        fwd.send(b"\x00 not a synthgrad message")
        hostile = [
            _act(run="another-run"),
            _act(src="l3", run=run),
            _act(port="nope", run=run),
            _act(name="y", run=run),
            _act(x=np.zeros((64, 256), np.int32), run=run),
            _act(x=np.zeros((64, 100), np.float32), run=run),
            _act(kind=Kind.GRAD, name="g", run=run),
            _act(step=10**9, run=run),
        ]
        for msg in hostile:
            send_message(fwd, msg)
        send_message(bwd, _act(src="l3", port="out", kind=Kind.GRAD, name="g", x=np.zeros((64, 9), np.float32), run=run))
        send_message(bwd, _act(src="source", port="out", kind=Kind.GRAD, name="g", run=run))
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        ctx.destroy(linger=0)
    assert proc.returncode == 0, err
    summary = last_json(out)
    rejected = summary["agents"]["l2"]["rejected"]
    expected = {"decode": 1, "run": 1, "sender": 2, "port": 1, "tensor": 1, "dtype": 1, "shape": 2, "kind": 1}
    assert {k: rejected.get(k) for k in expected} == expected and rejected.get("step", 0) >= 1
    assert summary["agents"]["l2"]["steps"] == 3000 and summary["metrics"]["test_accuracy"] > 0.8
    assert "rejected messages (dropped, counted by reason): " in out and "l2: " in out
    log = (run_dir / "logs" / "l2.log").read_text()
    assert "l2: rejected a message (shape)" in log and "l2: rejected a message (decode)" in log


def _labels(values, dtype=np.int64):
    return Message(Kind.CTX, src="source", port="labels", step=0, tensors={"x": np.asarray(values, dtype)})


@pytest.mark.parametrize(
    ("values", "dtype", "reason"),
    [([0, 9, 3], np.int64, None), ([1, 2], np.uint8, None), ([0, 10], np.int64, "label"), ([-1, 2], np.int32, "label"),
     ([0.5, 1.0], np.float32, "label"), ([True, False], np.bool_, "label")],
)
def test_labels_must_be_integer_classes(values, dtype, reason):
    plan = plan_run(load_topology(EXAMPLES / "mnist_cdni.toml", SMALL))
    assert Admission(plan.agents["head"]).forward(_labels(values, dtype)) == reason


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_a_floating_activation_of_another_precision_is_computed_in_float32(dtype):
    core = build_core(_plan().agents["l2"])
    core.on_forward(_act(x=np.ones((64, 256), dtype)))  # raised a dtype mismatch in the module before
    assert core.steps == 1

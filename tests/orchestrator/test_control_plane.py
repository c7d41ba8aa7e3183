"""The control plane survives strangers and impostors; what it writes is strict JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgpack
import pytest
from synthgrad.orchestrator.reports import check_report
from synthgrad.orchestrator.rundir import RunDir, dumps, json_safe
from synthgrad.protocol import (
    Kind,
    Message,
    connect_dealer,
    new_context,
    recv_message,
    send_message,
)

from ..conftest import EXAMPLES, last_json


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_msgpack_value_reaches_metrics_jsonl_as_strict_json(tmp_path):
    meta = {
        "none": None, "yes": True, "int": -(2**63), "big": 2**64 - 1, "float": 0.5,
        "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "str": "é",
        "bin": b"\x00\xff", "list": [1, b"\x01", float("nan"), [None]], "map": {"k": {"deep": b"\x02"}},
    }
    meta = msgpack.unpackb(msgpack.packb(meta), raw=False)  # exactly what a decoded meta holds
    run_dir = RunDir(tmp_path, "strict")
    run_dir.record("l1", 3, meta)
    run_dir.write_json("summary.json", {"metrics": meta})
    run_dir.close()
    line = _strict((run_dir.path / "metrics.jsonl").read_text())
    assert line["bin"] == "00ff" and line["nan"] is None and line["inf"] is None and line["-inf"] is None
    assert line["list"] == [1, "01", None, [None]] and line["map"] == {"k": {"deep": "02"}}
    assert line["big"] == 2**64 - 1 and line["str"] == "é" and line["yes"] is True
    assert _strict((run_dir.path / "summary.json").read_text())["metrics"]["bin"] == "00ff"
    assert json_safe({1: (2, 3)}) == {"1": [2, 3]} and dumps(float("nan")) == "null"


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_stranger_is_refused_and_an_impostor_cannot_take_over_an_agent(tmp_path):
    runs = tmp_path / "runs"
    overrides = ['agents.source.dataset="digits"', "run.batch_size=64", "run.eval_batch_size=359", "run.steps=3000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(EXAMPLES / "mnist_dni.toml"),
         *[arg for o in overrides for arg in ("--set", o)], "--runs-dir", str(runs), "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ctx = new_context()
    try:
        assert _wait_for(lambda: any(p.stat().st_size for p in runs.glob("*/metrics.jsonl")), 90), "never trained"
        run_dir = next(runs.glob("*"))
        control = f"ipc://{json.loads((run_dir / 'agents.json').read_text())['ipc_dir']}/control"
        stranger = connect_dealer(ctx, control, identity="intruder")
        send_message(stranger, Message(Kind.HELLO, src="intruder", meta={"pid": 1}))
        reply = recv_message(stranger, timeout_ms=10_000)
        assert reply is not None and reply.kind == Kind.ERROR and "no agent named 'intruder'" in reply.meta["error"]
        # An impostor naming itself after a registered agent, then vanishing: before, it took
        # over l2's route and the orchestrator died with "Host unreachable" once it left.
        impostor = connect_dealer(ctx, control, identity="l2")
        send_message(impostor, Message(Kind.HEARTBEAT, src="l2", meta={"state": "running"}))
        time.sleep(0.5)
        impostor.close(0)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        ctx.destroy(linger=0)
    assert proc.returncode == 0, err
    summary = last_json(out)
    assert summary["agents"]["l2"]["steps"] == 3000 and {a["state"] for a in summary["agents"].values()} == {"stopped"}
    assert "Traceback" not in err and "rejected a message (stranger): HELLO from 'intruder'" in err
    assert summary["control_rejected"]["stranger"] == 1
    assert "rejected messages (dropped, counted by reason): orchestrator (control): stranger 1" in out


BAD_REPORTS = [
    (Kind.METRICS, {"steps": "12"}),
    (Kind.METRICS, {"steps": -1}),
    (Kind.METRICS, {"steps": True}),
    (Kind.METRICS, {"loss": "x"}),
    (Kind.METRICS, {"eval": 1, "final": True}),  # no train_steps
    (Kind.METRICS, {"final_report": 1}),
    (Kind.METRICS, {"rejected.shape": 2.5}),
    (Kind.METRICS, {"t": 0}),
    (Kind.METRICS, {"agent": "l1"}),
    (Kind.HEARTBEAT, {"state": "ready", "budget": "9"}),
    (Kind.HELLO, {"pid": "1"}),
]


@pytest.mark.parametrize(("kind", "meta"), BAD_REPORTS)
def test_a_report_the_orchestrator_cannot_read_is_refused(kind, meta):
    assert check_report(kind, meta)


def test_the_reports_agents_send_are_read():
    assert check_report(Kind.METRICS, {"steps": 3, "loss": float("nan"), "rejected.run": 0, "sg_cos": 0.5}) is None
    assert check_report(Kind.METRICS, {"eval": 2, "final": False, "last": True, "train_steps": 9, "test_accuracy": 0.9}) is None
    assert check_report(Kind.HEARTBEAT, {"state": "ready", "pid": 7, "budget": 100}) is None

"""Runs over tcp with CurveZMQ: settings refused before anything starts, key generation, a
run that matches ipc exactly, and a run under attack on 127.0.0.1.

The attack: while a run trains, clients with no CURVE, with a valid key pair that is not the
run's, and with the run's own keys try to register on the control socket and to inject
messages into an agent's data socket.  Only those holding a run key get anywhere, and what
they inject is counted by the agent under a reason; the others leave no trace in the
agent's counters or the orchestrator's log.  Every process is killed in `finally`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.config import ConfigError
from synthgrad.orchestrator.keys import generate, load_run_keys, prepare_transport
from synthgrad.protocol import (
    CurveKeys,
    Kind,
    Message,
    connect_dealer,
    connect_push,
    new_context,
    recv_message,
    send_message,
)
from synthgrad.protocol.curve import (
    KeyFileError,
    load_public,
    load_secret,
    public_file,
    secret_file,
)

from ..conftest import last_json

AGENTS = ("source", "l1", "head")


def tiny(steps: int, **run) -> dict:
    """source (digits, 8x8) -> l1 (32) -> head, locked: deterministic, so ipc and tcp agree."""
    settings = {"steps": steps, "batch_size": 64, "eval_batch_size": 359, "lr": 3e-3, "seed": 3, **run}
    return builder.chain(1, width=32, mode="backprop", dataset="digits", run=settings)


# ----------------------------------------------------------------------------- before a run


@pytest.mark.parametrize(
    ("run", "key"),
    [
        ({"transport": "udp"}, "run.transport"),
        ({"transport": "tcp", "bind": "0.0.0.0"}, "run.bind"),
        ({"transport": "tcp", "bind": "localhost:5"}, "run.bind"),
        ({"transport": "tcp", "bind": 127}, "run.bind"),
        ({"keys": "/tmp/k"}, "run.keys"),  # keys on ipc would suggest an encryption there is not
        ({"transport": "tcp", "keys": 7}, "run.keys"),
    ],
)
def test_bad_transport_settings_are_refused_naming_the_key(run, key):
    with pytest.raises(ConfigError) as caught:
        builder.parse(tiny(1, **run))
    assert caught.value.key == key, caught.value


def test_a_bind_address_that_is_not_this_hosts_is_refused_before_the_run():
    with pytest.raises(ValueError, match="run.bind.*192.0.2.1"):  # TEST-NET-1: never local
        prepare_transport(builder.parse(tiny(1, transport="tcp", bind="192.0.2.1")).run, AGENTS)


def test_keys_generate_writes_private_pairs_and_keeps_or_rotates_them(cli, tmp_path):
    topo = builder.write(tiny(1), tmp_path / "t.toml")
    keys = tmp_path / "keys"
    proc = cli("keys", "generate", str(keys), "--topology", str(topo), "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(Path(p).name for p in last_json(proc.stdout)["written"]) == sorted(
        f"{n}.{ext}" for n in ("orchestrator", *AGENTS) for ext in ("key", "key_secret"))
    for folder in (keys, keys / "agents"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (None, *AGENTS):
        assert stat.S_IMODE(secret_file(keys, name).stat().st_mode) == 0o600
    before = load_run_keys(keys, AGENTS)
    assert set(before.agents) == set(AGENTS) and len(set(before.agents.values())) == 3
    proc = cli("keys", "generate", str(keys), "l1", "extra", "--force", "l1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = last_json(proc.stdout)
    assert sorted(Path(p).name for p in report["written"]) == ["extra.key", "extra.key_secret", "l1.key", "l1.key_secret"]
    assert report["kept"] == ["orchestrator"]
    after = load_run_keys(keys, (*AGENTS, "extra"))
    assert after.agents["l1"] != before.agents["l1"] and after.agents["head"] == before.agents["head"]
    assert after.server == before.server


def test_keys_generate_refuses_a_directory_others_may_enter(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with pytest.raises(KeyFileError, match=f"chmod 700 {shared}"):
        generate(shared, AGENTS)
    assert not list(shared.iterdir()) and stat.S_IMODE(shared.stat().st_mode) == 0o755  # untouched


def test_a_run_with_a_secret_others_can_read_exits_2_naming_the_file_and_the_fix(cli, tmp_path):
    keys = tmp_path / "keys"
    generate(keys, AGENTS)
    os.chmod(secret_file(keys, "l1"), 0o644)
    topo = builder.write(tiny(1, transport="tcp", keys=str(keys)), tmp_path / "t.toml")
    proc = cli("run", str(topo))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert str(secret_file(keys, "l1")) in proc.stderr and f"chmod 600 {secret_file(keys, 'l1')}" in proc.stderr
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
    os.chmod(secret_file(keys, "l1"), 0o600)
    with pytest.raises(KeyFileError, match="no key for agent 'l9'.*synthgrad keys generate"):
        load_run_keys(keys, ("l9",))


# ----------------------------------------------------------------------------- live runs


@pytest.mark.slow
def test_a_tcp_run_with_curve_trains_exactly_as_the_ipc_run(cli, tmp_path):
    keys = tmp_path / "keys"
    generate(keys, AGENTS)
    summaries = {}
    for transport in ("ipc", "tcp"):
        run = {"transport": transport, "name": transport} | ({"keys": str(keys)} if transport == "tcp" else {})
        proc = cli("run", str(builder.write(tiny(40, **run), tmp_path / f"{transport}.toml")), "--json", "--quiet")
        assert proc.returncode == 0, proc.stderr
        summaries[transport] = last_json(proc.stdout)
    ipc, tcp = summaries["ipc"], summaries["tcp"]
    assert tcp["steps"] == 40 and {a["state"] for a in tcp["agents"].values()} == {"stopped"}
    assert tcp["metrics"]["test_accuracy"] == ipc["metrics"]["test_accuracy"] > 0.5  # locked: same arithmetic
    assert all(not a["rejected"] for a in tcp["agents"].values())
    endpoints = json.loads((Path(tcp["run_dir"]) / "endpoints.json").read_text())
    assert endpoints["control"].startswith("tcp://127.0.0.1:")
    assert all(e.startswith("tcp://127.0.0.1:") for a in endpoints["agents"].values() for e in a.values())
    assert not (Path(tcp["run_dir"]) / "keys").exists()  # given keys: none made in the run directory


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    return None


def _act(src: str, step: int, run_id: str, width: int) -> Message:
    return Message(Kind.ACT, src=src, run=run_id, port="in", step=step,
                   tensors={"x": np.zeros((64, width), dtype=np.float32)})


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_only_holders_of_run_keys_reach_a_live_tcp_run(tmp_path):
    topo = builder.write(tiny(1500, transport="tcp"), tmp_path / "t.toml")  # fresh keys in the run dir
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(topo), "--runs-dir", str(runs), "--json", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ctx = new_context()
    try:
        found = _wait_for(lambda: next(runs.glob("*/endpoints.json"), None), 120)
        assert found, "the run never became ready"
        run_dir, endpoints = found.parent, json.loads(found.read_text())
        keys = run_dir / "keys"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700
        orchestrator = load_public(public_file(keys))
        l1_public = load_public(public_file(keys, "l1"))

        def own(name: str, server: bytes) -> CurveKeys:
            return CurveKeys(*load_secret(secret_file(keys, name)), server_public=server)

        outsider = CurveKeys.generate
        # Control plane: HELLO with no CURVE, with an unlisted key, and with a run key.
        dealers = {
            "plain": connect_dealer(ctx, endpoints["control"], "plain"),
            "unlisted": connect_dealer(ctx, endpoints["control"], "unlisted", curve=outsider(orchestrator)),
            "listed": connect_dealer(ctx, endpoints["control"], "listed", curve=own("l1", orchestrator)),
        }
        for name, dealer in dealers.items():
            send_message(dealer, Message(Kind.HELLO, src=name, meta={"pid": 1}))
        reply = recv_message(dealers["listed"], timeout_ms=10_000)
        assert reply is not None and reply.kind == Kind.ERROR and "no agent named 'listed'" in reply.meta["error"]
        assert recv_message(dealers["plain"], timeout_ms=300) is None
        assert recv_message(dealers["unlisted"], timeout_ms=300) is None
        # Data plane: into l1's forward socket.  The outsiders' messages would count as
        # `run` rejects if they arrived; the source's key sends 3 misshapen activations
        # (`shape`), head's key 2 claiming to come from the source (`sender`).
        fwd = endpoints["agents"]["l1"]["fwd"]
        pushes = {
            "plain": connect_push(ctx, fwd),
            "unlisted": connect_push(ctx, fwd, curve=outsider(l1_public)),
            "source": connect_push(ctx, fwd, curve=own("source", l1_public)),
            "head": connect_push(ctx, fwd, curve=own("head", l1_public)),
        }
        for name in ("plain", "unlisted"):
            for step in range(20):
                try:  # their handshake fails, so their queue may close: never wait on it
                    send_message(pushes[name], _act("source", step, "bogus", 64), zmq.NOBLOCK)
                except zmq.Again:
                    pass
        for step in range(3):
            send_message(pushes["source"], _act("source", 10**6 + step, run_dir.name, 7))
        for step in range(2):
            send_message(pushes["head"], _act("source", 10**6 + step, run_dir.name, 64))
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        ctx.destroy(linger=0)
    assert proc.returncode == 0, err
    summary = last_json(out)
    assert summary["steps"] == 1500 and {a["state"] for a in summary["agents"].values()} == {"stopped"}
    assert summary["metrics"]["test_accuracy"] > 0.8
    assert summary["agents"]["l1"]["rejected"] == {"shape": 3, "sender": 2}  # no `run`: outsiders never got in
    assert not summary["agents"]["source"]["rejected"] and not summary["agents"]["head"]["rejected"]
    assert "Traceback" not in err and "generated fresh CURVE keys for this run" in err
    assert "rejected a message (stranger): HELLO from 'listed'" in err
    assert "'plain'" not in err and "'unlisted'" not in err
    assert "refused a CURVE client" in err  # the orchestrator's ZAP handler saw the unlisted key
    l1_log = (run_dir / "logs" / "l1.log").read_text()
    assert "refused a CURVE client" in l1_log and "claims to come from 'source'" in l1_log

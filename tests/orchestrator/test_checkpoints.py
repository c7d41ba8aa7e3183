"""Checkpoint rounds, retention and fallback (orchestrator/checkpoints.py), the checks on an
agent's CHECKPOINT answer, the restart policy, and the fault settings' refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from synthgrad.agents.runtime.checkpoint import save_atomic
from synthgrad.orchestrator.checkpoints import Checkpoints
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.reports import check_report
from synthgrad.orchestrator.restarts import AgentRecord, RestartPolicy
from synthgrad.protocol.kinds import Kind
from synthgrad.protocol.plan import RunSettings

from ..conftest import EXAMPLES

AGENTS = ["source", "l1", "head"]


def _answer(tmp_folder, name: str, ident: int, step: int) -> dict:
    path = tmp_folder / f"{name}.pt"
    sha = save_atomic(path, {"steps": step, "w": torch.full((3,), float(step))})
    return {"id": ident, "step": step, "steps": step, "file": str(path), "sha256": sha}


def _round(sets: Checkpoints, step: int) -> dict:
    """One whole round: the source answers with its cut, then every other agent."""
    begin = sets.begin(step, 0.0)
    folder = sets.root / f"{begin['id']:06d}"
    cut = sets.on_report("source", _answer(folder, "source", begin["id"], step))
    assert cut == {"id": begin["id"], "dir": str(folder), "step": step}
    for name in AGENTS[1:]:
        assert sets.on_report(name, _answer(folder, name, begin["id"], step)) is None
    return begin


def test_a_round_is_complete_only_when_every_agent_answered(tmp_path):
    sets = Checkpoints(tmp_path, AGENTS, "source", RunSettings(steps=10, checkpoint_every=5))
    assert sets.latest() is None
    begin = sets.begin(0, 0.0)
    folder = tmp_path / f"{begin['id']:06d}"
    sets.on_report("source", _answer(folder, "source", begin["id"], 7))
    sets.on_report("l1", _answer(folder, "l1", begin["id"], 7))
    assert sets.latest() is None and sets.current is not None  # the head has not answered
    assert sets.on_report("head", _answer(folder, "head", 99, 7)) is None  # another round's: ignored
    sets.on_report("head", _answer(folder, "head", begin["id"], 7))
    manifest = sets.latest()
    assert manifest["step"] == 7 and set(manifest["agents"]) == set(AGENTS)
    assert manifest["agents"]["l1"]["file"] == str(folder / "l1.pt")


def test_only_the_newest_sets_are_kept_and_a_corrupt_newest_falls_back(tmp_path):
    sets = Checkpoints(tmp_path, AGENTS, "source", RunSettings(steps=10, checkpoint_keep=2))
    for step in (10, 20, 30):
        _round(sets, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000002", "000003"]
    newest = tmp_path / "000003" / "head.pt"
    newest.write_bytes(newest.read_bytes()[:-7])  # torn
    assert sets.latest()["step"] == 20
    assert sets.latest(only="l1")["step"] == 30  # one agent's restart needs only its own file
    assert Checkpoints(tmp_path, AGENTS, "source", RunSettings(steps=10)).next_id == 4  # a resumed run goes on counting


def test_a_round_that_does_not_complete_is_abandoned_and_removed(tmp_path):
    sets = Checkpoints(tmp_path, AGENTS, "source", RunSettings(steps=10, checkpoint_every_s=1.0))
    assert sets.due(0, 0.5) is False
    assert sets.due(0, 2e9) is True
    begin = sets.begin(0, 100.0)
    assert sets.due(0, 2e9) is False  # one round at a time
    sets.expire(100.0 + 29)
    assert sets.current is not None
    sets.expire(100.0 + 31)
    assert sets.current is None
    abandoned = tmp_path / f"{begin['id']:06d}"
    # A late agent still writes into it (it is not told); that must neither fail nor count.
    _answer(abandoned, "l1", begin["id"], 3)
    assert sets.latest() is None
    _round(sets, 8)  # the next complete round removes the abandoned one's folder
    assert not abandoned.exists() and sets.latest()["step"] == 8
    sets.begin(9, 200.0)
    sets.abandon("interrupted")
    sets.remove_incomplete()  # the run is over
    assert [p.name for p in tmp_path.iterdir()] == ["000002"]


def test_a_checkpoint_into_a_removed_folder_fails_cleanly(tmp_path):
    folder = tmp_path / "000001"
    with pytest.raises(OSError):
        save_atomic(folder / "l1.pt", {"steps": 1}, make_folder=False)
    assert not folder.exists()


def test_checkpointing_can_be_switched_off():
    sets = Checkpoints(Path("/nonexistent"), AGENTS, "source", RunSettings(steps=10, checkpoint_every_s=0))
    assert not sets.enabled and not sets.due(10**6, 10**9)


@pytest.mark.parametrize(
    "meta, problem",
    [
        ({"id": -1, "step": 3, "file": "x", "sha256": "a" * 64}, "'id'"),
        ({"id": 1, "step": "3", "file": "x", "sha256": "a" * 64}, "'step'"),
        ({"id": 1, "step": -2, "file": "x", "sha256": "a" * 64}, "'step'"),
        ({"id": 1, "step": 3, "file": 5, "sha256": "a" * 64}, "'file'"),
        ({"id": 1, "step": 3, "file": "x", "sha256": "A" * 64}, "'sha256'"),
        ({"id": 1, "step": 3, "file": "x", "sha256": "a" * 63}, "'sha256'"),
        ({"id": 1, "step": 3, "steps": True, "file": "x", "sha256": "a" * 64}, "'steps'"),
    ],
)
def test_a_checkpoint_answer_the_orchestrator_cannot_use_is_refused(meta, problem):
    assert problem in check_report(Kind.CHECKPOINT, meta)


def test_a_good_checkpoint_answer_passes():
    assert check_report(Kind.CHECKPOINT, {"id": 1, "step": -1, "steps": 0, "file": "x", "sha256": "0" * 64}) is None


def test_the_restart_policy_backs_off_and_gives_up_and_never_restarts_the_source():
    policy = RestartPolicy(RunSettings(steps=1, max_restarts=2, restart_backoff_s=0.5), "source")
    record = AgentRecord(handle=None)
    assert "source is not restarted" in policy.refusal("source", record)
    delays = []
    for _ in range(2):
        assert policy.refusal("l1", record) is None
        delays.append(policy.delay_s(record))
        record.restarts += 1
    assert delays == [0.5, 1.0]
    assert "restarts exhausted (2 of run.max_restarts = 2)" in policy.refusal("l1", record)


def test_counters_of_a_dead_incarnation_are_kept_in_the_totals():
    record = AgentRecord(handle=None, last_metrics={"rejected.shape": 2, "dropped.peer_down.head": 5})
    record.went_down(10.0)
    record.last_metrics = {"rejected.shape": 1, "dropped.sg_cache.links.1": 3}
    summary = record.summary()
    assert summary["rejected"] == {"shape": 3}
    assert summary["dropped"] == {"peer_down.head": 5, "sg_cache.links.1": 3}
    record.went_down(11.0)  # failed again before it rejoined: one outage
    assert record.down_since == 10.0
    assert record.rejoined(12.5) == 2.5 and record.incarnation == 1


@pytest.mark.parametrize(
    "override, key",
    [
        ("run.heartbeat_s=0", "run.heartbeat_s"),
        ("run.hang_timeout_s=-1", "run.hang_timeout_s"),
        ("run.max_restarts=-1", "run.max_restarts"),
        ("run.max_restarts=true", "run.max_restarts"),
        ("run.checkpoint_every=1.5", "run.checkpoint_every"),
        ("run.checkpoint_keep=0", "run.checkpoint_keep"),
        ("run.checkpoint_every_s=-3", "run.checkpoint_every_s"),
        ("run.restart_backoff_s=inf", "run.restart_backoff_s"),
        ('run.restart_backoff_s="1s"', "run.restart_backoff_s"),
        ("run.restart_backoff_s=1e6", "run.restart_backoff_s"),
        ("run.heartbeat_s=25", "run.heartbeat_s"),
        ("run.hang_timeout_s=0.5", "run.hang_timeout_s"),
    ],
)
def test_bad_fault_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_topology(EXAMPLES / "mnist_dni.toml", [override])
    assert err.value.key == key


def test_a_hang_timeout_under_two_heartbeats_is_refused():
    with pytest.raises(ConfigError, match="at least twice run.heartbeat_s") as err:
        load_topology(EXAMPLES / "mnist_dni.toml", ["run.heartbeat_s=1", "run.hang_timeout_s=1.5"])
    assert err.value.key == "run.hang_timeout_s"


@pytest.mark.parametrize(
    "manifest",
    [{}, [1], {"id": 2, "step": 5, "agents": {"source": {"file": "source.pt", "sha256": "0" * 64, "step": 5}}},
     {"id": 2, "step": 5, "agents": {n: {"file": f"{n}.pt", "sha256": "0" * 64, "step": 5, "steps": "x"} for n in AGENTS}}],
)
def test_a_malformed_newest_manifest_falls_back_to_the_set_before(tmp_path, manifest):
    sets = Checkpoints(tmp_path, AGENTS, "source", RunSettings(steps=10))
    _round(sets, 4)
    bad = tmp_path / "000002"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert sets.latest()["step"] == 4


def test_the_final_evaluation_is_sent_again_when_a_peer_restarts_after_it_began(one_torch_thread):
    from synthgrad.agents.runtime.build import build_core
    from synthgrad.orchestrator.plan import plan_run

    overrides = ['agents.source.dataset="digits"', "run.steps=3", "run.eval_batch_size=400", "run.batch_size=32"]
    plan = plan_run(load_topology(EXAMPLES / "mnist_dni.toml", overrides))
    source = build_core(plan.agents["source"])
    metas = []
    while source.produce():
        metas.append(source.outbox[-1][2].meta)
    assert source.finished and metas[-1]["final"] and metas[-1]["last"]
    first = len(metas)
    assert source.abandon("l2") == 0 and not source.finished
    while source.produce():
        metas.append(source.outbox[-1][2].meta)
    again = metas[first:]
    assert [{**m, "eval": 0} for m in again] == metas[3:first]  # the whole final evaluation, once more
    assert all(m["final"] and m["eval"] == 1 for m in again)  # as a new round


def test_a_manifest_is_plain_json_naming_each_file_and_hash(tmp_path):
    sets = Checkpoints(tmp_path, AGENTS, "source", RunSettings(steps=10))
    _round(sets, 4)
    manifest = json.loads((tmp_path / "000001" / "manifest.json").read_text())
    entry = manifest["agents"]["source"]
    assert {k: entry[k] for k in ("file", "step", "steps")} == {"file": "source.pt", "step": 4, "steps": 4}
    assert len(entry["sha256"]) == 64

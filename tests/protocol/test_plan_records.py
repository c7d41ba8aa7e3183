"""Plan records (protocol/plan.py): wire round trips, refusals, mode semantics, no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import msgpack
import pytest
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.plan import plan_run
from synthgrad.protocol.lifecycle import Lifecycle
from synthgrad.protocol.plan import AgentPlan, LinkMode, LinkPlan, PlanError, RunSettings, SGOptions

from ..conftest import EXAMPLES

PLANNABLE = ["mnist_cdni.toml", "mnist_unlocked.toml", "mnist_cnn_cdni.toml", "copy_dni.toml", "two_timescale.toml"]


@pytest.mark.parametrize("example", PLANNABLE)
def test_every_agent_plan_survives_the_wire_and_json(example):
    plan = plan_run(load_topology(EXAMPLES / example))
    for agent in plan.agents.values():
        wire = agent.to_wire()
        # What WELCOME carries (msgpack) and what config.json holds (JSON) both give it back.
        assert AgentPlan.from_wire(msgpack.unpackb(msgpack.packb(wire))) == agent
        assert AgentPlan.from_wire(json.loads(json.dumps(wire))) == agent


def test_the_wire_form_keeps_its_keys():
    plan = plan_run(load_topology(EXAMPLES / "mnist_cdni.toml"))
    wire = plan.agents["l1"].to_wire()
    assert set(wire) == {
        "name", "kind", "params", "tick_every", "seed", "run", "num_classes",
        "in_shapes", "out_shapes", "in_links", "out_links", "p_update",
    }
    link = wire["out_links"][0]
    assert set(link) == {
        "index", "src", "src_port", "dst", "dst_port", "mode", "sg", "options",
        "context", "from_source", "src_tick", "dst_tick", "feedback",
    }
    assert link["mode"] == "dni" and link["sg"]["context"] is True and link["options"] == {}
    assert wire["in_shapes"] == {"in": [784], "labels": []}  # cDNI: the labels come as context


def test_defaults_live_in_the_records_and_the_config_applies_them():
    topo = load_topology(EXAMPLES / "mnist_dni.toml", ["run.steps=5"])
    assert topo.run.hwm == RunSettings().hwm and topo.run.eval_batch_size == RunSettings().eval_batch_size
    assert topo.links[0].sg.cache == SGOptions().cache


def test_unknown_and_missing_keys_are_refused_by_name():
    wire = plan_run(load_topology(EXAMPLES / "mnist_dni.toml")).agents["l1"].to_wire()
    with pytest.raises(PlanError, match=r"spec\.context_ports: unknown key"):
        AgentPlan.from_wire({**wire, "context_ports": ["labels"]})
    with pytest.raises(PlanError, match=r"spec\.name: missing"):
        AgentPlan.from_wire({k: v for k, v in wire.items() if k != "name"})
    bad_link = {**wire["out_links"][0], "mode": "sideways"}
    with pytest.raises(PlanError, match="sideways"):
        LinkPlan.from_wire(bad_link)
    with pytest.raises(PlanError, match=r"run\.stpes: unknown key"):
        RunSettings.from_wire({"stpes": 3})


def test_link_modes_say_what_they_imply():
    assert [m.value for m in LinkMode] == ["backprop", "dni", "unlocked", "none"]
    assert LinkMode.BACKPROP.locked and not LinkMode.DNI.locked
    assert LinkMode.DNI.has_sg_model and LinkMode.UNLOCKED.has_sg_model and not LinkMode.BACKPROP.has_sg_model
    assert LinkMode.UNLOCKED.has_synthetic_input and not LinkMode.DNI.has_synthetic_input
    assert not LinkMode.NONE.carries_gradient and all(m.carries_gradient for m in LinkMode if m is not LinkMode.NONE)


def test_a_typo_in_a_link_or_its_defaults_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"links\.0\.mdoe: unknown link key"):
        load_topology(EXAMPLES / "mnist_dni.toml", ['links.0.mdoe="dni"'])
    with pytest.raises(ConfigError, match=r"link_defaults\.lamda: unknown link key"):
        load_topology(EXAMPLES / "mnist_dni.toml", ["link_defaults.lamda=0.5"])


def test_lifecycle_moves_forward_only_and_failed_is_final():
    state = Lifecycle.SPAWNED.advance(Lifecycle.READY)
    assert state is Lifecycle.READY and state.reached(Lifecycle.REGISTERED)
    assert state.advance(Lifecycle.REGISTERED) is Lifecycle.READY  # a late message changes nothing
    assert state.advance(Lifecycle.FAILED).advance(Lifecycle.RUNNING) is Lifecycle.FAILED
    assert not Lifecycle.FAILED.reached(Lifecycle.SPAWNED)
    assert Lifecycle.STOPPED.advance(Lifecycle.FAILED) is Lifecycle.STOPPED


def test_the_records_and_the_config_import_no_torch():
    code = (
        "import sys; import synthgrad.protocol.plan, synthgrad.protocol.lifecycle, synthgrad.orchestrator.config; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0

"""Planning: kinds resolved, parameters and ports checked, shapes propagated, cDNI wired."""

from __future__ import annotations

import pytest
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.plan import agent_seed, plan_run
from synthgrad.protocol.plan import LinkMode

from ..conftest import EXAMPLES


def plan(name: str, *overrides: str):
    return plan_run(load_topology(EXAMPLES / name, list(overrides)))


def test_shapes_flow_from_the_source_through_the_layers():
    p = plan("mnist_dni.toml", "agents.l2.width=64")
    assert p.agents["l1"].in_shapes == {"in": (784,)}
    assert p.agents["l3"].in_shapes == {"in": (64,)}
    assert p.agents["head"].out_shapes == {"logits": (10,)}
    assert p.order[0] == "source" and p.terminals == ["head"]


def test_cdni_sends_labels_to_every_sg_host():
    p = plan("mnist_cdni.toml")
    for name in ("l1", "l2", "l3"):
        ctx = [link for link in p.agents[name].in_links if link.context]
        assert [(c.src, c.src_port, c.dst_port) for c in ctx] == [("source", "y", "labels")]


def test_plain_dni_sends_labels_only_to_the_head():
    p = plan("mnist_dni.toml")
    assert not [link for link in p.agents["l1"].in_links if link.context]


def test_links_out_of_the_source_and_context_links_carry_no_gradient():
    p = plan("mnist_dni.toml")
    assert all(link.mode is LinkMode.NONE for link in p.agents["source"].out_links)
    assert p.agents["l1"].out_links[0].mode is LinkMode.DNI


def test_agents_get_distinct_reproducible_seeds():
    a, b = plan("mnist_dni.toml"), plan("mnist_dni.toml")
    seeds = [a.agents[n].seed for n in a.order]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [b.agents[n].seed for n in b.order]
    assert a.agents["l1"].seed == agent_seed(0, "l1") != agent_seed(1, "l1")


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        (["agents.l2.kind=nonesuch"], "agents.l2.kind", "known kinds"),
        (["agents.l2.depth=3"], "agents.l2.depth", "unknown parameter of kind"),
        (['links.1.from="l1.sideways"'], "links.1.from", "no output port"),
        (['links.1.to="l3"'], "links.2.to", "already fed"),
        (['links.0.from="head"'], "links", "cycle"),
    ],
)
def test_planning_errors_name_the_key(overrides, key, text):
    with pytest.raises(ConfigError) as err:
        plan("mnist_dni.toml", *overrides)
    assert err.value.key == key and text in str(err.value)


def test_a_missing_required_parameter_is_named(tmp_path):
    doc = (EXAMPLES / "mnist_dni.toml").read_text().replace("width = 256\n", "", 1)
    path = tmp_path / "t.toml"
    path.write_text(doc)
    with pytest.raises(ConfigError) as err:
        plan_run(load_topology(path))
    assert err.value.key == "agents.l1.width" and "requires" in str(err.value)

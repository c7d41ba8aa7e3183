"""The topology builder: documents that round-trip through TOML and validate like the files."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.config import ConfigError, load_topology, validate

from ..conftest import EXAMPLES


def mixed() -> dict:
    """A topology with every kind of value a file holds: floats, lists, nested sg tables."""
    agents = {
        "source": builder.agent("source", dataset="digits", flatten=False),
        "l1": builder.agent("dense", width=32, tick_every=2),
        "head": builder.agent("head", classes=10),
    }
    links = [
        builder.link("source.x", "l1", "none"),
        builder.link("l1", "head", "dni", {"model": "mlp", "hidden": [16, 8]}, p_update=0.5),
        builder.link("source.y", "head.labels", **{"lambda": 0.0}),
    ]
    run = {"steps": 7, "lr": 3e-4, "lr_decay_at": [3, 5], "seed": 2}
    return builder.topology(agents, links, run=run, link_defaults={"sg": {"host": "sender"}})


def test_to_toml_round_trips_to_the_same_document():
    doc = mixed()
    assert tomllib.loads(builder.to_toml(doc)) == doc
    chain = builder.chain(3, mode="unlocked", sg={"context": True})
    assert tomllib.loads(builder.to_toml(chain)) == chain


def test_to_toml_keeps_agent_and_link_order():
    doc = builder.chain(
        {"z": builder.agent("dense", width=4), "a": builder.agent("dense", width=4)}
    )
    back = tomllib.loads(builder.to_toml(doc))
    assert list(back["agents"]) == ["source", "z", "a", "head"]
    assert [(link["from"], link["to"]) for link in back["links"]] == [
        ("source.x", "z"),
        ("z", "a"),
        ("a", "head"),
        ("source.y", "head.labels"),
    ]


def test_parse_gives_the_agents_links_and_modes():
    topo = builder.parse(mixed())
    assert list(topo.agents) == ["source", "l1", "head"]
    assert topo.agents["l1"].kind == "dense" and topo.agents["l1"].params == {"width": 32}
    assert topo.agents["l1"].tick_every == 2
    assert [(link.src, link.src_port, link.dst, link.dst_port) for link in topo.links] == [
        ("source", "x", "l1", ""),
        ("l1", "", "head", ""),
        ("source", "y", "head", "labels"),
    ]
    assert [link.mode.value for link in topo.links] == ["none", "dni", "backprop"]
    assert topo.links[1].sg.model == "mlp" and topo.links[1].sg.hidden == (16, 8)
    assert topo.links[1].p_update == 0.5
    assert topo.run.steps == 7 and topo.run.lr_decay_at == (3, 5) and topo.run.name == "run"


def test_parse_applies_overrides_without_changing_the_document():
    doc = builder.chain(2, mode="dni")
    topo = builder.parse(doc, ["run.steps=9", "links.1.mode=backprop", "agents.l2.width=8"])
    assert topo.run.steps == 9 and topo.agents["l2"].params["width"] == 8
    assert [link.mode.value for link in topo.links] == ["dni", "backprop", "dni", "dni"]
    assert doc == builder.chain(2, mode="dni")


def test_chain_is_a_valid_source_layers_head_topology():
    doc = builder.chain(3, width=64, mode="dni", sg={"model": "linear"}, run={"epochs": 1})
    topo = validate(doc)
    assert list(topo.agents) == ["source", "l1", "l2", "l3", "head"]
    assert {name: spec.kind for name, spec in topo.agents.items()} == {
        "source": "source",
        "l1": "dense",
        "l2": "dense",
        "l3": "dense",
        "head": "head",
    }
    assert all(topo.agents[f"l{i}"].params == {"width": 64} for i in (1, 2, 3))
    assert topo.agents["source"].params == {"dataset": "mnist"}
    assert topo.agents["head"].params == {"classes": 10}
    assert [link.dst for link in topo.links] == ["l1", "l2", "l3", "head", "head"]
    assert all(link.mode.value == "dni" and link.sg.model == "linear" for link in topo.links)
    assert topo.run.epochs == 1 and topo.run.steps is None


def test_chain_options_for_the_labels_link_and_the_source():
    topo = validate(builder.chain(1, mode="dni", labels_mode="none", dataset=None))
    assert topo.links[-1].dst_port == "labels" and topo.links[-1].mode.value == "none"
    assert topo.agents["source"].params == {}
    bare = builder.chain(1, labels=False)
    assert "link_defaults" not in bare
    assert [link["to"] for link in bare["links"]] == ["l1", "head"]
    assert validate(bare).run.steps == 1  # the default run settings


def test_chain_rebuilds_an_example_file():
    layers = {f"d{i}": builder.agent("dense", width=1024) for i in range(1, 5)}
    run = {
        "name": "bench-chain",
        "steps": 300,
        "batch_size": 256,
        "eval_every": 0,
        "eval_batch_size": 10000,
        "seed": 0,
        "lr": 3e-4,
    }
    doc = builder.chain(layers, mode="dni", sg={"model": "linear", "host": "sender"}, run=run)
    assert doc == tomllib.loads((EXAMPLES / "bench_chain.toml").read_text())


def test_write_gives_a_file_that_loads_like_the_document(tmp_path):
    doc = mixed()
    path = builder.write(doc, tmp_path / "mixed.toml", header="A test topology.\nTwo lines.")
    assert path == tmp_path / "mixed.toml"
    assert path.read_text().startswith("# A test topology.\n# Two lines.\n")
    from_file, in_memory = load_topology(path), builder.parse(doc, name="mixed")
    assert from_file.run == in_memory.run and from_file.run.name == "mixed"
    assert from_file.agents == in_memory.agents and from_file.links == in_memory.links


def test_topology_copies_its_tables():
    table = builder.agent("dense", width=4)
    sg = {"model": "mlp", "hidden": [8]}
    doc = builder.topology({"a": table, "b": table}, [builder.link("a", "b", "dni", sg)])
    doc["agents"]["a"]["width"] = 99
    doc["links"][0]["sg"]["hidden"].append(4)
    assert table == {"kind": "dense", "width": 4} and doc["agents"]["b"]["width"] == 4
    assert sg == {"model": "mlp", "hidden": [8]}


@pytest.mark.parametrize(
    ("doc", "overrides", "key"),
    [
        (builder.topology({"a": builder.agent("dense", width=4)}, [("a", "b")]), (), "links.0.to"),
        (builder.chain(2, mode="sideways"), (), "link_defaults.mode"),
        (builder.topology({"a": {"width": 4}}), (), "agents.a.kind"),
        (builder.chain(1, run={"steps": 1, "epochs": 1}), (), "run.steps"),
        (builder.chain(1), ["links.0.mode=sideways"], "links.0.mode"),
        (builder.chain(1), ["links.9.mode=dni"], "links.9"),
    ],
)
def test_a_bad_document_is_refused_naming_the_key(doc, overrides, key):
    with pytest.raises(ConfigError) as err:
        builder.parse(doc, overrides)
    assert err.value.key == key


def test_the_builder_imports_no_torch():
    code = (
        "import sys, synthgrad.orchestrator.builder; "
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('synthgrad.agents')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

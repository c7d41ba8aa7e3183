"""Topology files: overrides, and errors that name the file and the key path."""

from __future__ import annotations

import pytest
from synthgrad.orchestrator.config import ConfigError, load_topology, parse_value

from ..conftest import EXAMPLES

MNIST_DNI = EXAMPLES / "mnist_dni.toml"


def test_example_loads_with_links_and_defaults():
    topo = load_topology(MNIST_DNI)
    assert set(topo.agents) == {"source", "l1", "l2", "l3", "head"}
    assert [link.mode for link in topo.links[:4]] == ["dni"] * 4
    assert topo.run.steps == 2000 and topo.run.batch_size == 256


def test_overrides_reach_run_agents_and_links():
    topo = load_topology(
        MNIST_DNI,
        ["run.steps=7", "run.seed=3", "agents.l1.width=32", "links.1.mode=backprop", 'agents.source.dataset="digits"'],
    )
    assert topo.run.steps == 7 and topo.run.seed == 3
    assert topo.agents["l1"].params["width"] == 32
    assert topo.links[1].mode == "backprop" and topo.links[0].mode == "dni"
    assert topo.agents["source"].params["dataset"] == "digits"


def test_parse_value_reads_toml_scalars_and_falls_back_to_text():
    assert parse_value("3") == 3 and parse_value("2.5") == 2.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("dni") == "dni"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("run.steps=-1", "run.steps"),
        ("run.stepz=5", "run.stepz"),
        ("links.0.mode=sideways", "links.0.mode"),
        ("link_defaults.sg.model=huge", "links.0.sg.model"),
        ("agents.l1.tick_every=0", "agents.l1.tick_every"),
        ("run.lr_decay_at=[300, 200]", "run.lr_decay_at"),
        ("run.lr_decay=1.5", "run.lr_decay"),
        ('links.1.to="nowhere"', "links.1.to"),
        ("links.9.mode=dni", "links.9"),
    ],
)
def test_bad_values_name_the_key_and_the_file(override, key):
    with pytest.raises(ConfigError) as err:
        load_topology(MNIST_DNI, [override])
    assert err.value.key == key
    assert str(MNIST_DNI) in str(err.value)


def test_steps_and_epochs_are_exclusive():
    with pytest.raises(ConfigError, match="exactly one of run.steps or run.epochs"):
        load_topology(MNIST_DNI, ["run.epochs=2"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such topology file"):
        load_topology(tmp_path / "absent.toml")


def test_cli_bad_config_exits_2_naming_the_key(cli):
    proc = cli("run", str(MNIST_DNI), "--set", "links.0.mode=sideways", timeout=60)
    assert proc.returncode == 2
    assert "links.0.mode" in proc.stderr and "mnist_dni.toml" in proc.stderr


def test_cli_unknown_kind_exits_2_listing_known_kinds(cli):
    proc = cli("run", str(MNIST_DNI), "--set", "agents.l2.kind=nonesuch", timeout=60)
    assert proc.returncode == 2
    assert "agents.l2.kind" in proc.stderr
    for known in ("dense", "head", "source", "conv"):
        assert known in proc.stderr

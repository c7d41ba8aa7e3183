"""Topology files: overrides, and errors that name the file and the key path."""

from __future__ import annotations

import tomllib

import pytest
from synthgrad.orchestrator.config import ConfigError, load_topology, parse_value, validate
from synthgrad.protocol.plan import RunSettings

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
        ("link_defaults.sg.model=huge", "link_defaults.sg.model"),
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


def test_steps_and_epochs_are_exclusive_in_a_file():
    doc = tomllib.loads(MNIST_DNI.read_text())
    doc["run"].update(steps=10, epochs=2)
    with pytest.raises(ConfigError, match="exactly one of run.steps or run.epochs") as err:
        validate(doc)
    assert err.value.key == "run.steps"


def test_setting_epochs_replaces_steps_and_the_other_way_round():
    by_epochs = load_topology(MNIST_DNI, ["run.epochs=2"]).run
    assert (by_epochs.steps, by_epochs.epochs) == (None, 2)
    by_steps = load_topology(MNIST_DNI, ["run.epochs=2", "run.steps=7"]).run
    assert (by_steps.steps, by_steps.epochs) == (7, None)


def test_null_removes_a_key():
    assert load_topology(MNIST_DNI, ["run.batch_size=32", "run.batch_size=null"]).run.batch_size == RunSettings().batch_size
    assert load_topology(MNIST_DNI, ["run.no_such_key=null"]).run == load_topology(MNIST_DNI).run
    with pytest.raises(ConfigError, match="exactly one of run.steps or run.epochs"):
        load_topology(MNIST_DNI, ["run.steps=null"])
    # The string "null" stays reachable, quoted as in TOML (and is then refused as a number).
    with pytest.raises(ConfigError, match="must be an integer, got 'null'") as err:
        load_topology(MNIST_DNI, ['run.batch_size="null"'])
    assert err.value.key == "run.batch_size"


def test_unknown_keys_suggest_the_nearest_known_one():
    with pytest.raises(ConfigError, match="did you mean 'mode'") as err:
        load_topology(MNIST_DNI, ["links.0.mdoe=dni"])
    assert err.value.key == "links.0.mdoe"
    with pytest.raises(ConfigError, match="did you mean 'batch_size'") as err:
        load_topology(MNIST_DNI, ["run.batchsize=3"])
    assert err.value.key == "run.batchsize"
    with pytest.raises(ConfigError, match="did you mean 'scale'") as err:
        load_topology(MNIST_DNI, ["link_defaults.sg.scael=1"])
    assert err.value.key == "link_defaults.sg.scael"


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

"""Broken topologies are refused before anything starts, with the key that is wrong."""

from __future__ import annotations

import pytest
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.config import ConfigError, load_topology
from synthgrad.orchestrator.plan import plan_run

from ..conftest import EXAMPLES

CASES = [
    ('agents.l1.width="32"', "agents.l1.width"),
    ("agents.l1.width=2.5", "agents.l1.width"),
    ("agents.l1.width=true", "agents.l1.width"),
    ("agents.l1.width=0", "agents.l1.width"),
    ("agents.l1.batch_norm=1", "agents.l1.batch_norm"),
    ("agents.head.classes=0", "agents.head.classes"),
    ("agents.head.classes=5", "agents.head.classes"),  # 10 digits: the loss would index past 5
    ("run.lr=inf", "run.lr"),
    ("run.lr=nan", "run.lr"),
    ("run.metrics_every_s=0", "run.metrics_every_s"),
    ("link_defaults.sg.scale=nan", "link_defaults.sg.scale"),
    ("link_defaults.sg.lr=-1", "link_defaults.sg.lr"),
    ("link_defaults.sg.hidden=[-1]", "link_defaults.sg.hidden"),  # named where it is written
    ("links.0.sg=3", "links.0.sg"),
    ("run.steps.x=1", "run.steps"),
    ("run.steps=100000000000000000000000000000", "run.steps"),
    ('run.name="../../x"', "run.name"),
    ("run.name=1979-05-27", "run.name"),
    (f'agents.{"a" * 300}.kind="dense"', f'agents.{"a" * 300}'),
    ("run.batch_size=60001", "run.batch_size"),  # MNIST has 60,000 training images
    ('run.on_nonfinite="ignore"', "run.on_nonfinite"),
    ("run.seed=-1", "run.seed"),
    ("run.lr_decay_at=[true]", "run.lr_decay_at"),
    ("link_defaults.sg.hidden=[true]", "link_defaults.sg.hidden"),  # a bool is no width
    ('links.1.to="source"', "links.1.to"),  # a data source takes no input
    ('links.4.from="source.x"', "links.4.from"),  # images into head.labels
    ('links.4.from="l1"', "links.4.from"),
    ('links.0.from="source.y"', "links.0.to"),  # labels into a data input
    ("links.0.mdoe=1", "links.0.mdoe"),
    ("run.transprot=1", "run.transprot"),
    ("agents.l1.widht=3", "agents.l1.widht"),
]


@pytest.mark.parametrize(("override", "key"), CASES)
def test_a_wrong_value_is_refused_naming_its_key(override, key):
    with pytest.raises(ConfigError) as caught:
        plan_run(load_topology(EXAMPLES / "mnist_dni.toml", [override]))
    assert caught.value.key == key, caught.value


def test_a_directory_or_a_binary_file_is_refused_plainly(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_topology(tmp_path)
    binary = tmp_path / "weights.toml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a text file"):
        load_topology(binary)


def test_the_cli_exits_2_before_any_run_directory_exists(cli, tmp_path):
    proc = cli("run", str(EXAMPLES / "mnist_dni.toml"), "--set", "agents.head.classes=5")
    assert proc.returncode == 2 and "agents.head.classes" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("summary.json")) and not list(tmp_path.rglob("config.json"))


def test_a_terminal_without_its_labels_is_refused():
    doc = builder.chain(1, width=16, dataset="digits", labels=False, run={"steps": 10, "batch_size": 64})
    with pytest.raises(ConfigError, match="input port head.labels is not fed by any link"):
        plan_run(builder.parse(doc))

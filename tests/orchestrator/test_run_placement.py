"""`synthgrad run --fabric/--pin`: the placement is recorded and agents follow it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from synthgrad.protocol.plan import AgentPlan

from ..conftest import EXAMPLES, last_json

pytestmark = pytest.mark.slow


def test_run_records_the_placement_and_pins_agents_to_host_cpus(cli):
    proc = cli(
        "run", str(EXAMPLES / "mnist_cdni.toml"), "--set", "run.steps=20", "--set", 'agents.source.dataset="digits"',
        "--fabric", "wormhole_n150", "--pin", "--json", "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(last_json(proc.stdout)["run_dir"])
    record = json.loads((run_dir / "placement.json").read_text())
    agents = {"source", "l1", "l2", "l3", "head"}
    assert set(record["placement"]) == agents
    assert all({"chip", "x", "y"} <= set(p) for p in record["placement"].values())
    assert record["cost"]["hop_bytes"] > 0
    assert set(record["cpus"]) == agents
    assert set(record["cpus"].values()) <= os.sched_getaffinity(0)
    config = json.loads((run_dir / "config.json").read_text())
    assert {n: AgentPlan.from_wire(s).cpu for n, s in config["specs"].items()} == record["cpus"]


def test_an_unknown_fabric_preset_exits_2_listing_the_known_ones(cli):
    proc = cli("run", str(EXAMPLES / "mnist_cdni.toml"), "--fabric", "nonesuch", timeout=120)
    assert proc.returncode == 2
    assert "nonesuch" in proc.stderr and "wormhole_n150" in proc.stderr

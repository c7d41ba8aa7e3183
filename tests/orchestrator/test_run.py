"""`synthgrad run` end to end: real agent processes, real sockets, real MNIST.

The locked-mode test is the proof that the plumbing is right: across processes, backprop
must give the same parameters as one plain torch loop with the same seeds and data order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from synthgrad.agents.kinds.modules import build_module
from synthgrad.environments.batches import BatchStream
from synthgrad.environments.datasets import load_dataset
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import agent_seed
from synthgrad.protocol.plan import AgentPlan, LinkMode

from ..conftest import EXAMPLES, last_json

pytestmark = pytest.mark.slow


def reference_backprop(topology_file: Path, overrides: list[str], steps: int) -> dict[str, dict]:
    """Plain single-process backprop of the example chain, independent of our runtime."""
    topo = load_topology(topology_file, overrides)
    run = topo.run
    torch.set_num_threads(1)
    names, modules, optimizers = [], [], []
    shape = (784,)
    for name, spec in topo.agents.items():
        if spec.kind == "source":
            continue
        torch.manual_seed(agent_seed(run.seed, name))
        module, shape = build_module(spec.kind, spec.params, shape)
        names.append(name)
        modules.append(module.train())
        optimizers.append(torch.optim.Adam(module.parameters(), lr=run.lr))
    stream = BatchStream(load_dataset("mnist", "train"), run.batch_size, run.seed)
    for _ in range(steps):
        images, labels = stream.next_batch()
        h = torch.from_numpy(images.reshape(len(images), -1))
        for module in modules:
            h = module(h)
        loss = F.cross_entropy(h, torch.from_numpy(labels))
        for opt in optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in optimizers:
            opt.step()
    return {n: m.state_dict() for n, m in zip(names, modules, strict=True)}


def test_locked_backprop_across_processes_equals_single_process_backprop(cli):
    overrides = ["run.steps=20", "run.seed=7", "link_defaults.mode=backprop", "run.eval_every=0"]
    proc = cli("run", str(EXAMPLES / "mnist_backprop.toml"), *sum((["--set", o] for o in overrides), []), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["steps"] == 20
    expected = reference_backprop(EXAMPLES / "mnist_backprop.toml", overrides, 20)
    for name, state in expected.items():
        got = torch.load(Path(summary["run_dir"]) / "agents" / name / "final.pt", weights_only=True)["module"]
        assert got.keys() == state.keys()
        for key, value in state.items():
            assert torch.allclose(got[key].float(), value.float(), atol=1e-5, rtol=0), f"{name}.{key} differs"


# Chance is 10%; after 300 steps (77k examples, ~1.3 epochs) both DNI variants must be far above it.
LEARNS_THRESHOLD = 0.85


@pytest.mark.parametrize("example", ["mnist_dni.toml", "mnist_cdni.toml"])
def test_dni_and_cdni_across_processes_learn(cli, example):
    proc = cli("run", str(EXAMPLES / example), "--set", "run.steps=300", "--set", "run.eval_every=150", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["metrics"]["test_accuracy"] >= LEARNS_THRESHOLD
    run_dir = Path(summary["run_dir"])
    # The run directory holds what docs/ARCHITECTURE.md promises, and metrics name their agents.
    for name in ("config.json", "summary.json", "topology.toml", "metrics.jsonl", "agents.json"):
        assert (run_dir / name).exists(), name
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"l1", "l2", "l3", "head", "source"} <= {line["agent"] for line in lines}
    assert any("sg_loss.l1->l2" in line for line in lines if line["agent"] == "l1")
    assert any("loss" in line and "steps_per_s" in line for line in lines if line["agent"] == "head")
    assert [e["train_steps"] for e in summary["evaluations"]] == [150, 300]
    assert set(summary["agents"]) == {"source", "l1", "l2", "l3", "head"}
    assert all(a["steps"] == 300 and a["pid"] > 0 and a["restarts"] == 0 for a in summary["agents"].values())
    assert {a["state"] for a in summary["agents"].values()} == {"stopped"}  # every final report came
    assert summary["samples_per_s"] > 0 and summary["wall_s"] > 0
    # config.json holds every agent's plan in its wire form, readable back into the records.
    config = json.loads((run_dir / "config.json").read_text())
    plans = {name: AgentPlan.from_wire(spec) for name, spec in config["specs"].items()}
    assert plans["l1"].out_links[0].mode is LinkMode.DNI and plans["l1"].run.steps == 300

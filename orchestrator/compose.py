"""`synthgrad compose`: join a run's agents into ONE torch module (the paper's "corporation").

The composed module follows the topology's data links from the source's input to the
terminal agent's output, with every agent's final weights, in evaluation mode.  It is saved
with `torch.export` (an ExportedProgram, batch dimension dynamic), which a user loads with
`torch.export.load(path).module()` and no synthgrad installed: export is the supported,
Python-free serialisation of current torch, where TorchScript is in maintenance only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..agents.base import Source
from ..agents.registry import resolve_kind
from ..protocol.plan import AgentPlan


class ComposedNetwork(nn.Module):
    """Agents' modules wired as in the topology; `forward(x)` returns the terminal's output."""

    def __init__(self, plans: dict[str, AgentPlan], order: list[str], source: str, terminal: str) -> None:
        super().__init__()
        self.order = [n for n in order if n != source]
        self.source, self.terminal = source, terminal
        self.agents = {}
        self.nets = nn.ModuleDict()
        self.wiring: dict[str, list[tuple[str, str, str]]] = {}
        self.input_port = ""
        for name in self.order:
            plan = plans[name]
            agent = resolve_kind(plan.kind)(name, dict(plan.params))
            module, _ = agent.build(dict(plan.in_shapes))
            agent.module = module
            self.agents[name] = agent
            self.nets[name] = module
            self.wiring[name] = [(link.dst_port, link.src, link.src_port) for link in plan.in_links if not link.context]
            for link in plan.in_links:
                if link.src == source and not link.context:
                    self.input_port = link.src_port
        self.output_port = resolve_kind(plans[terminal].kind).outputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {(self.source, self.input_port): x}
        for name in self.order:
            inputs = {port: values[(src, src_port)] for port, src, src_port in self.wiring[name]}
            for port, tensor in self.agents[name].forward(inputs).items():
                values[(name, port)] = tensor
        return values[(self.terminal, self.output_port)]


def read_config(run_dir: str | Path) -> dict:
    """A run directory's config.json, its agents' plans as `AgentPlan`s under "plans"."""
    config = json.loads(Path(run_dir, "config.json").read_text())
    config["plans"] = {name: AgentPlan.from_wire(spec) for name, spec in config["specs"].items()}
    return config


def load_composed(run_dir: str | Path) -> ComposedNetwork:
    """Rebuild a finished run's network from its config and the agents' final weights."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    terminals = config["terminals"]
    if any(link.feedback for plan in config["plans"].values() for link in plan.in_links):
        raise ValueError(
            "compose cannot join an RL run's agents yet (its policy would need the env's loop cut open; "
            "the torsos' and heads' final weights are in RUN_DIR/agents/NAME/final.pt)"
        )
    if len(terminals) != 1:
        raise ValueError(f"compose needs exactly one terminal agent, the run has {terminals}")
    net = ComposedNetwork(config["plans"], config["order"], config["source"], terminals[0])
    for name in net.order:
        path = run_dir / "agents" / name / "final.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: did the run finish? (agent {name!r})")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.nets[name].load_state_dict(state["module"])
    return net.eval()


def example_input(run_dir: str | Path, batch: int = 2) -> torch.Tensor:
    """A zero batch shaped like the source's input port."""
    config = read_config(run_dir)
    plan = config["plans"][config["source"]]
    cls = resolve_kind(plan.kind)
    assert issubclass(cls, Source)
    shape = cls(plan.name, dict(plan.params)).output_shapes()["x"]
    return torch.zeros(batch, *shape)


def export_composed(run_dir: str | Path, out: str | Path) -> Path:
    """Compose a run and save it with `torch.export` (dynamic batch size) to `out`."""
    net = load_composed(run_dir)
    x = example_input(run_dir)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    out = Path(out)
    torch.export.save(program, out)
    return out

"""Small plain-data workloads for the fabric tests (no torch needed)."""

from __future__ import annotations

import pytest
from synthgrad.orchestrator.fabric.costs import AgentCost, LinkCost, Workload


def uniform_chain(stages: int, nbytes: float = 0.0, mode: str = "backprop", flops: float = 1e9,
                  slow: int | None = None, update: float = 0.0, sram: float = 1e5) -> Workload:
    """`stages` equal agents in a line (backward = 2 x forward); one may be twice as slow."""
    agents = []
    for i in range(stages):
        scale = 2.0 if i == slow else 1.0
        agents.append(AgentCost(f"s{i}", fwd_flops=flops * scale, bwd_flops=2 * flops * scale,
                                update_flops=update, param_bytes=sram, rows=64))
    links = [LinkCost(f"s{i}", f"s{i + 1}", nbytes, mode) for i in range(stages - 1)]
    return Workload(agents, links, batch=64, name=f"uniform{stages}")


@pytest.fixture
def chain():
    return uniform_chain

"""`build_core`: the step logic one agent's plan calls for (core.py describes the two jobs)."""

from __future__ import annotations

from ...protocol.plan import AgentPlan
from ..base import Agent, Source
from ..registry import resolve_kind
from .core import AgentCore
from .env_driver import EnvDriver
from .source_driver import SourceDriver
from .stepper import ModuleStepper


def build_core(plan: AgentPlan, agent: Agent | Source | None = None) -> AgentCore:
    """An `EnvDriver` for an environment (a source that closes a loop), a `SourceDriver` for
    another data source, else a `ModuleStepper`.

    `agent` is the kind's instance; by default it is made from `plan.kind` and `plan.params`.

    Raises:
        UnknownKind: when `plan.kind` cannot be found (agents/registry.py).
    """
    if agent is None:
        agent = resolve_kind(plan.kind)(plan.name, dict(plan.params))
    if isinstance(agent, Source):
        return EnvDriver(agent, plan) if getattr(agent, "closes_loop", False) else SourceDriver(agent, plan)
    return ModuleStepper(agent, plan)

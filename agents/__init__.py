"""Agents, in three layers: the public plug-in API (this package's names), the runtime that
runs a kind (`synthgrad.agents.runtime`) and the built-in kinds (`synthgrad.agents.kinds`).

Write a kind by subclassing `Agent` (see docs/writing-an-agent.md), register it with
`register` or an entry point in the group `synthgrad.agents`, and check it with
`check_agent`.  Everything a plug-in needs is importable from here.
"""

from .base import REQUIRED, Agent, Shape, Source
from .checker import AgentCheckError, check_agent
from .errors import ParamError
from .registry import ENTRY_POINT_GROUP, UnknownKind, known_kinds, register, resolve_kind

__all__ = [
    "ENTRY_POINT_GROUP",
    "REQUIRED",
    "Agent",
    "AgentCheckError",
    "ParamError",
    "Shape",
    "Source",
    "UnknownKind",
    "check_agent",
    "known_kinds",
    "register",
    "resolve_kind",
]

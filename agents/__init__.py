"""Agents: the public plug-in API, the built-in kinds, and the runtime that runs them.

Write a kind by subclassing `Agent` (see docs/writing-an-agent.md), register it with
`register` or an entry point in the group `synthgrad.agents`, and check it with
`check_agent`.
"""

from .base import REQUIRED, Agent, Source
from .checker import AgentCheckError, check_agent
from .registry import ENTRY_POINT_GROUP, UnknownKind, known_kinds, register, resolve_kind

__all__ = [
    "ENTRY_POINT_GROUP",
    "REQUIRED",
    "Agent",
    "AgentCheckError",
    "Source",
    "UnknownKind",
    "check_agent",
    "known_kinds",
    "register",
    "resolve_kind",
]

"""Finding agent kinds: by registered name, by entry point, or by import path.

A topology names a kind in one of three ways:
  * a registered name: the built-ins (`source`, `dense`, `conv`, `head`, `rnn`, `copy_task`,
    `text`, and the two-timescale system's `digit_stream`, `fast_counter`, `slow_counter`)
    and any class passed to `register`;
  * an entry point in the group `synthgrad.agents` of an installed distribution;
  * an import path `package.module:Class`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .base import Agent, Source

ENTRY_POINT_GROUP = "synthgrad.agents"
BUILTIN = {
    "source": "synthgrad.agents.kinds.source:DatasetSource",
    "dense": "synthgrad.agents.kinds.layers:Dense",
    "conv": "synthgrad.agents.kinds.layers:Conv",
    "head": "synthgrad.agents.kinds.layers:Head",
    "rnn": "synthgrad.agents.kinds.recurrent:RNN",
    "copy_task": "synthgrad.agents.kinds.sequence_source:CopyTaskSource",
    "text": "synthgrad.agents.kinds.sequence_source:TextSource",
    "digit_stream": "synthgrad.agents.kinds.timescale:DigitStream",
    "fast_counter": "synthgrad.agents.kinds.timescale:FastCounter",
    "slow_counter": "synthgrad.agents.kinds.timescale:SlowCounter",
    "env": "synthgrad.agents.kinds.env:GymEnv",
    "mlp": "synthgrad.agents.kinds.actor_critic:MLP",
    "actor_critic": "synthgrad.agents.kinds.actor_critic:ActorCritic",
}
_registered: dict[str, type] = {}


class UnknownKind(LookupError):
    """A kind that is neither registered, an entry point, nor an importable class."""


def register(cls: type) -> type:
    """Register an `Agent` or `Source` subclass under its `kind` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, (Agent, Source))) or not cls.kind:
        raise TypeError(f"{cls!r} must subclass Agent or Source and set a non-empty `kind`")
    _registered[cls.kind] = cls
    return cls


def _import(path: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UnknownKind(f"cannot import {path!r}: {err}") from None
    if not (isinstance(obj, type) and issubclass(obj, (Agent, Source))):
        raise UnknownKind(f"{path!r} is not a subclass of synthgrad.agents.Agent or Source")
    return obj


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_kinds() -> dict[str, str]:
    """Every kind found by name: kind -> where it comes from."""
    kinds = {name: f"built-in ({path})" for name, path in BUILTIN.items()}
    kinds.update({name: f"entry point ({ep.value})" for name, ep in _entry_points().items()})
    kinds.update({name: f"registered ({cls.__module__}.{cls.__qualname__})" for name, cls in _registered.items()})
    return dict(sorted(kinds.items()))


def resolve_kind(kind: str) -> type:
    """The class for a kind name, entry point or `module:Class` path.

    Raises:
        UnknownKind: naming the kind and listing the known ones.
    """
    if kind in _registered:
        return _registered[kind]
    if kind in BUILTIN:
        return _import(BUILTIN[kind])
    eps = _entry_points()
    if kind in eps:
        obj = eps[kind].load()
        if not (isinstance(obj, type) and issubclass(obj, (Agent, Source))):
            raise UnknownKind(f"entry point {kind!r} is not an Agent or Source subclass")
        return obj
    if ":" in kind:
        return _import(kind)
    raise UnknownKind(
        f"unknown agent kind {kind!r}; known kinds: {', '.join(known_kinds())} "
        "(or give an import path 'package.module:Class')"
    )

"""Topology files: TOML in, a validated `Topology` out, with errors that name the key path.

A topology has a `[run]` table, agents as `[agents.NAME]` tables, links as `[[links]]`, and an
optional `[link_defaults]` table merged under every link.  `--set a.b=value` overrides are
applied to the raw document before validation, so an override is checked like the file.
This module needs no torch: the CLI validates structure before any heavy import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from ..protocol.plan import (
    OPTIMIZERS,
    SG_HOSTS,
    SG_MODELS,
    LinkMode,
    LinkPlan,
    RunSettings,
    SGOptions,
)

# Link keys besides `from`, `to`, `mode` and `sg`: `lambda` (BP(lambda), stored as sg.lam) and
# `p_update` (sparse updates of the link's receiver, resolved per agent by plan.py).
LINK_OPTIONS = ("lambda", "p_update")
LINK_MODES = tuple(mode.value for mode in LinkMode)


class ConfigError(ValueError):
    """A topology that cannot run; `key` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key, self.source, self.message = key, source, message
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a topology: its name, registered kind, parameters and tick rate."""

    name: str
    kind: str
    params: dict
    tick_every: int = 1


@dataclass
class Topology:
    """A validated topology: run settings, agents by name, links in file order.

    Each link is a `LinkPlan` as the file gives it: a port may still be "" (the agent's first
    port); planning fills in the ports, the context flags and the ticks."""

    run: RunSettings
    agents: dict[str, AgentSpec]
    links: list[LinkPlan]
    source: str = ""
    raw: dict = dataclasses.field(default_factory=dict)

    def links_from(self, name: str) -> list[LinkPlan]:
        return [link for link in self.links if link.src == name]

    def links_to(self, name: str) -> list[LinkPlan]:
        return [link for link in self.links if link.dst == name]


def parse_value(text: str) -> Any:
    """Parse an override's value as a TOML value (numbers, booleans, arrays), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(doc: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; list entries are addressed by index."""
    path, sep, value = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError("--set", f"{assignment!r} is not KEY=VALUE (e.g. --set run.steps=100)")
    keys = path.strip().split(".")
    node: Any = doc
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, ".".join(keys[: depth + 1]), create=True)
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, path)] = parse_value(value.strip())
    else:
        node[last] = parse_value(value.strip())


def _child(node: Any, key: str, where: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, where)]
    if not isinstance(node, dict):
        raise ConfigError(where, "is not a table, so it has no keys to set")
    if key not in node and create:
        node[key] = {}
    return node[key]


def _index(node: list, key: str, where: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(where, f"index must be 0..{len(node) - 1}")
    return int(key)


def load_topology(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Topology:
    """Read, override and validate a topology file.

    Raises:
        ConfigError: naming the file and the key path of the first problem found.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("", f"no such topology file: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("", f"not valid TOML: {err}", str(path)) from None
    try:
        for assignment in overrides:
            apply_override(doc, assignment)
        return validate(doc, default_name=path.stem)
    except ConfigError as err:
        raise ConfigError(err.key, err.message, str(path)) from None


def _merge(record: type, given: dict, where: str) -> dict:
    """The record's defaults (protocol/plan.py, the one place they live) updated by `given`."""
    defaults = record().to_wire()  # TOML-shaped: lists, not tuples
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key; known: {sorted(defaults)}")
    return {**defaults, **given}


def _expect(value: Any, types: type | tuple, where: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(where, f"must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(where, f"must be {what}, got {value!r}")
    return value


def _validate_run(given: Any, default_name: str) -> RunSettings:
    run = _merge(RunSettings, _expect(given, dict, "run", "a table"), "run")
    if (run["steps"] is None) == (run["epochs"] is None):
        raise ConfigError("run.steps", "give exactly one of run.steps or run.epochs")
    for key in ("steps", "epochs", "batch_size", "eval_batch_size", "hwm"):
        if run[key] is not None and _expect(run[key], int, f"run.{key}", "an integer") < 1:
            raise ConfigError(f"run.{key}", f"must be at least 1, got {run[key]}")
    if _expect(run["eval_every"], int, "run.eval_every", "an integer") < 0:
        raise ConfigError("run.eval_every", "must be 0 (only at the end) or a number of steps")
    _expect(run["seed"], int, "run.seed", "an integer")
    if _expect(run["lr"], (int, float), "run.lr", "a number") <= 0:
        raise ConfigError("run.lr", "must be positive")
    milestones = _expect(run["lr_decay_at"], list, "run.lr_decay_at", "a list of steps")
    if any(not isinstance(m, int) or m < 1 for m in milestones) or milestones != sorted(set(milestones)):
        raise ConfigError("run.lr_decay_at", f"must be increasing positive step numbers, got {milestones}")
    decay = _expect(run["lr_decay"], (int, float), "run.lr_decay", "a number")
    if not 0 < decay <= 1:
        raise ConfigError("run.lr_decay", f"must be in (0, 1], got {decay}")
    if run["optimizer"] not in OPTIMIZERS:
        raise ConfigError("run.optimizer", f"must be one of {list(OPTIMIZERS)}")
    run["name"] = run["name"] or default_name
    run["lr_decay_at"] = tuple(milestones)
    return RunSettings(**run)


def _validate_sg(given: Any, where: str) -> dict:
    """The `sg` table's values by field of `SGOptions` (a dict: `lambda` may still set `lam`)."""
    sg = _merge(SGOptions, _expect(given, dict, where, "a table"), where)
    if sg["model"] not in SG_MODELS:
        raise ConfigError(f"{where}.model", f"must be one of {list(SG_MODELS)}")
    if sg["host"] not in SG_HOSTS:
        raise ConfigError(f"{where}.host", f"must be one of {list(SG_HOSTS)}")
    hidden = _expect(sg["hidden"], list, f"{where}.hidden", "a list of layer widths")
    if any(not isinstance(h, int) or h < 1 for h in hidden):
        raise ConfigError(f"{where}.hidden", "every width must be a positive integer")
    if sg["model"] == "linear" and hidden:
        raise ConfigError(f"{where}.hidden", "a linear SG model has no hidden layers; use model = 'mlp' or 'conv'")
    kernel = _expect(sg["kernel"], int, f"{where}.kernel", "an integer")
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"{where}.kernel", f"must be a positive odd integer (same-size output), got {kernel}")
    _probability(sg["lam"], f"{where}.lam")
    widths = _expect(sg["input_hidden"], list, f"{where}.input_hidden", "a list of layer widths")
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in widths):
        raise ConfigError(f"{where}.input_hidden", "every width must be a positive integer")
    _expect(sg["scale"], (int, float), f"{where}.scale", "a number")
    _expect(sg["context"], bool, f"{where}.context", "true or false")
    if _expect(sg["cache"], int, f"{where}.cache", "an integer") < 1:
        raise ConfigError(f"{where}.cache", "must be at least 1")
    sg["hidden"], sg["input_hidden"] = tuple(hidden), tuple(widths)
    return sg


def _probability(value: Any, where: str) -> float:
    if not 0 <= _expect(value, (int, float), where, "a number in [0, 1]") <= 1:
        raise ConfigError(where, f"must be in [0, 1], got {value}")
    return float(value)


def _endpoint(text: Any, where: str) -> tuple[str, str]:
    _expect(text, str, where, "'agent' or 'agent.port'")
    name, _, port = text.partition(".")
    return name, port


def _validate_link(index: int, given: Any, defaults: dict) -> LinkPlan:
    where = f"links.{index}"
    _expect(given, dict, where, "a table")
    given = dict(given)
    for key in ("from", "to"):
        if key not in given:
            raise ConfigError(f"{where}.{key}", "is required")
    src, src_port = _endpoint(given.pop("from"), f"{where}.from")
    dst, dst_port = _endpoint(given.pop("to"), f"{where}.to")
    given_sg_table = {**defaults.get("sg", {}), **given.pop("sg", {})}
    sg = _validate_sg(given_sg_table, f"{where}.sg")
    mode = given.pop("mode", defaults.get("mode", LinkMode.BACKPROP.value))
    if mode not in LINK_MODES:
        raise ConfigError(f"{where}.mode", f"{mode!r} is not a link mode; choose one of {list(LINK_MODES)}")
    mode = LinkMode(mode)
    options = {k: v for k, v in defaults.items() if k not in ("mode", "sg")}
    options.update(given)
    unknown = sorted(set(options) - set(LINK_OPTIONS))
    if unknown:
        bad = unknown[0]
        where_bad = f"{where}.{bad}" if bad in given else f"link_defaults.{bad}"
        raise ConfigError(where_bad, f"unknown link key; known: {sorted(['from', 'to', 'mode', 'sg', *LINK_OPTIONS])}")
    p_update = None
    if "p_update" in options:
        p_update = _probability(options["p_update"], f"{where}.p_update")
    if "lambda" in options:
        # One place holds lambda: the link option is another spelling of `sg.lam`.
        lam = _probability(options.pop("lambda"), f"{where}.lambda")
        if "lam" in given_sg_table and sg["lam"] != lam:
            raise ConfigError(f"{where}.lambda", f"contradicts sg.lam = {sg['lam']}; give one of them")
        sg["lam"] = lam
    if mode.has_sg_model and sg["host"] == "receiver":
        if sg["lam"] > 0:
            raise ConfigError(f"{where}.sg.lam", "BP(lambda) needs the true gradient at the sender; use sg.host = 'sender'")
        if mode.has_synthetic_input:
            raise ConfigError(f"{where}.sg.host", "mode 'unlocked' never waits for an answer; use sg.host = 'sender'")
    return LinkPlan(index, src, src_port, dst, dst_port, mode, SGOptions(**sg), p_update)


def validate(doc: dict, default_name: str = "run") -> Topology:
    """Validate a parsed topology document (see module docstring) into a `Topology`."""
    unknown = sorted(set(doc) - {"run", "agents", "links", "link_defaults"})
    if unknown:
        raise ConfigError(unknown[0], "unknown top-level table; known: run, agents, links, link_defaults")
    run = _validate_run(doc.get("run", {}), default_name)
    agents: dict[str, AgentSpec] = {}
    for name, table in _expect(doc.get("agents", {}), dict, "agents", "a table of agents").items():
        where = f"agents.{name}"
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(where, "agent names use letters, digits, '-' and '_' only")
        params = dict(_expect(table, dict, where, "a table"))
        kind = params.pop("kind", None)
        if not isinstance(kind, str):
            raise ConfigError(f"{where}.kind", "is required (see `synthgrad agents` for the kinds)")
        tick = params.pop("tick_every", 1)
        if _expect(tick, int, f"{where}.tick_every", "an integer") < 1:
            raise ConfigError(f"{where}.tick_every", "must be at least 1 (act every T-th step)")
        agents[name] = AgentSpec(name, kind, params, tick)
    if not agents:
        raise ConfigError("agents", "a topology needs at least one agent")
    defaults = _expect(doc.get("link_defaults", {}), dict, "link_defaults", "a table")
    if "mode" in defaults and defaults["mode"] not in LINK_MODES:
        raise ConfigError("link_defaults.mode", f"must be one of {list(LINK_MODES)}")
    links = [
        _validate_link(i, table, defaults)
        for i, table in enumerate(_expect(doc.get("links", []), list, "links", "an array of tables"))
    ]
    for link in links:
        for end, name in (("from", link.src), ("to", link.dst)):
            if name not in agents:
                raise ConfigError(f"{link.key}.{end}", f"no agent named {name!r}; agents: {sorted(agents)}")
        if link.src == link.dst:
            raise ConfigError(f"{link.key}.to", "a link cannot join an agent to itself")
    return Topology(run=run, agents=agents, links=links, raw=doc)

"""Topology files: TOML in, a validated `Topology` out, with errors that name the key path.

A topology has a `[run]` table, agents as `[agents.NAME]` tables, links as `[[links]]`, and an
optional `[link_defaults]` table merged under every link.  `--set a.b=value` overrides are
applied to the raw document before validation, so an override is checked like the file.
This module needs no torch: the CLI validates structure before any heavy import.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.plan import (
    NONFINITE_POLICIES,
    OPTIMIZERS,
    SG_HOSTS,
    SG_MODELS,
    TRANSPORTS,
    LinkMode,
    LinkPlan,
    RunSettings,
    SGOptions,
)

# Link keys besides `from`, `to`, `mode` and `sg`: `lambda` (BP(lambda), stored as sg.lam) and
# `p_update` (sparse updates of the link's receiver, resolved per agent by plan.py).
LINK_OPTIONS = ("lambda", "p_update")
LINK_MODES = tuple(mode.value for mode in LinkMode)
MAX_COUNT = 10**9  # steps, epochs, batch sizes: beyond this a value is a typo, and overflows int64 sums
MAX_NAME = 64  # agent and run names go into file names, ipc paths and ZeroMQ identities
NAME_PATTERN = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")


class ConfigError(ValueError):
    """A topology that cannot run; `key` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key, self.source, self.message = key, source, message
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


def unknown_key(where: str, key: str, known: list[str] | tuple[str, ...] | set[str], what: str = "key") -> ConfigError:
    """The error for a key nobody reads: names it, suggests the nearest known key, lists all."""
    known = sorted(known)
    near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return ConfigError(f"{where}.{key}" if where else str(key), f"unknown {what}; {hint}known: {known}")


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


UNSET = "null"  # `--set KEY=null` removes KEY (TOML has no null; the string is '"null"')
# Keys of which a file gives one: setting one through --set removes the other.
EXCLUSIVE = {"run.steps": "run.epochs", "run.epochs": "run.steps"}


def apply_override(doc: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; list entries are addressed by index.

    `a.b.c=null` removes the key (a no-op when it is absent); setting `run.steps` removes
    `run.epochs` and the other way round, since a run gives exactly one of them.

    Raises:
        ConfigError: not KEY=VALUE, a path through a value that is not a table, a bad index.
    """
    path, sep, value = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError("--set", f"{assignment!r} is not KEY=VALUE (e.g. --set run.steps=100)")
    path, value = path.strip(), value.strip()
    keys = path.split(".")
    unset = value == UNSET
    node: Any = doc
    for depth, key in enumerate(keys[:-1]):
        if unset and isinstance(node, dict) and key not in node:
            return  # nothing to remove
        node = _child(node, key, ".".join(keys[: depth + 1]), create=True)
    last = keys[-1]
    if not isinstance(node, (dict, list)):
        raise ConfigError(".".join(keys[:-1]), f"is {node!r}, not a table, so it has no key {last!r} to set")
    if isinstance(node, list):
        if unset:
            raise ConfigError(path, "an entry of an array cannot be removed with =null; edit the file")
        node[_index(node, last, path)] = parse_value(value)
        return
    if unset:
        node.pop(last, None)
        return
    node[last] = parse_value(value)
    if path in EXCLUSIVE:
        node.pop(EXCLUSIVE[path].rpartition(".")[2], None)


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
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"no such topology file: {path}") from None
    except IsADirectoryError:
        raise ConfigError("", f"{path} is a directory; give a topology file (examples/*.toml)") from None
    except PermissionError:
        raise ConfigError("", f"cannot read {path}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError("", "not a text file (a topology is UTF-8 TOML)", str(path)) from None
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
        raise unknown_key(where, unknown[0], defaults)
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
        if run[key] is not None and not 1 <= _expect(run[key], int, f"run.{key}", "an integer") <= MAX_COUNT:
            raise ConfigError(f"run.{key}", f"must be in 1..{MAX_COUNT:,}, got {run[key]}")
    if _expect(run["eval_every"], int, "run.eval_every", "an integer") < 0:
        raise ConfigError("run.eval_every", "must be 0 (only at the end) or a number of steps")
    if not 0 <= _expect(run["seed"], int, "run.seed", "an integer") < 2**32:
        raise ConfigError("run.seed", f"must be in 0..{2**32 - 1:,} (numpy seeds are unsigned 32-bit), got {run['seed']}")
    _positive_number(run["lr"], "run.lr")
    _positive_number(run["eps"], "run.eps")
    if _finite(_expect(run["max_grad_norm"], (int, float), "run.max_grad_norm", "a number"), "run.max_grad_norm") < 0:
        raise ConfigError("run.max_grad_norm", f"must be 0 (off) or a positive norm, got {run['max_grad_norm']}")
    for key in ("register_timeout_s", "metrics_every_s"):
        _positive_number(run[key], f"run.{key}")
    _expect(run["runs_dir"], str, "run.runs_dir", "a folder name")
    for key in ("trace", "tensorboard"):
        _expect(run[key], bool, f"run.{key}", "true or false")
    if run["name"] is not None:
        _file_name(run["name"], "run.name")
    milestones = _expect(run["lr_decay_at"], list, "run.lr_decay_at", "a list of steps")
    if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in milestones) or milestones != sorted(set(milestones)):
        raise ConfigError("run.lr_decay_at", f"must be increasing positive step numbers, got {milestones}")
    decay = _expect(run["lr_decay"], (int, float), "run.lr_decay", "a number")
    if not 0 < decay <= 1:
        raise ConfigError("run.lr_decay", f"must be in (0, 1], got {decay}")
    if run["optimizer"] not in OPTIMIZERS:
        raise ConfigError("run.optimizer", f"must be one of {list(OPTIMIZERS)}")
    if run["on_nonfinite"] not in NONFINITE_POLICIES:
        raise ConfigError("run.on_nonfinite", f"must be one of {list(NONFINITE_POLICIES)}, got {run['on_nonfinite']!r}")
    _validate_transport(run)
    _validate_faults(run)
    run["name"] = run["name"] or default_name
    run["lr_decay_at"] = tuple(milestones)
    return RunSettings(**run)


def _validate_faults(run: dict) -> None:
    """Heartbeats, hang timeout, restart policy and checkpoints (docs/fault-tolerance.md)."""
    for key in ("heartbeat_s", "hang_timeout_s"):
        _positive_number(run[key], f"run.{key}")
    if run["heartbeat_s"] > 5:  # an agent gives the orchestrator up after 20 s of silence (ORPHAN_S)
        raise ConfigError("run.heartbeat_s", f"must be at most 5 s (agents take 20 s of silence for a dead orchestrator), got {run['heartbeat_s']}")
    if run["hang_timeout_s"] < 1:
        raise ConfigError("run.hang_timeout_s", f"must be at least 1 s (shorter, a busy but healthy agent is killed as hung), got {run['hang_timeout_s']}")
    if run["hang_timeout_s"] < 2 * run["heartbeat_s"]:
        raise ConfigError(
            "run.hang_timeout_s",
            f"must be at least twice run.heartbeat_s ({run['heartbeat_s']} s), got {run['hang_timeout_s']}: "
            "one late heartbeat is not a hang",
        )
    for key in ("max_restarts", "checkpoint_every"):
        if not 0 <= _expect(run[key], int, f"run.{key}", "an integer") <= MAX_COUNT:
            raise ConfigError(f"run.{key}", f"must be in 0..{MAX_COUNT:,}, got {run[key]}")
    if not 1 <= _expect(run["checkpoint_keep"], int, "run.checkpoint_keep", "an integer") <= 1000:
        raise ConfigError("run.checkpoint_keep", f"must be in 1..1000 (checkpoint sets kept), got {run['checkpoint_keep']}")
    for key in ("restart_backoff_s", "checkpoint_every_s"):
        if _expect(run[key], (int, float), f"run.{key}", "a number of seconds") < 0 or not math.isfinite(run[key]):
            raise ConfigError(f"run.{key}", f"must be a finite number of seconds >= 0, got {run[key]}")
    if run["restart_backoff_s"] > 60:
        raise ConfigError("run.restart_backoff_s", f"must be at most 60 s (it doubles with each restart), got {run['restart_backoff_s']}")


def _validate_transport(run: dict) -> None:
    """`run.transport`, `run.bind` and `run.keys` (docs/security.md).

    `bind` must be one interface's IP address, not a wildcard: it is also the address peers
    are told to dial.  `keys` only means something on tcp; refusing it on ipc keeps anyone
    from believing an ipc run is encrypted.  Whether the address exists on this host and
    the key files are private is checked by the CLI before the run starts (orchestrator/keys.py).
    """
    if run["transport"] not in TRANSPORTS:
        raise ConfigError("run.transport", f"must be one of {list(TRANSPORTS)}, got {run['transport']!r}")
    try:
        address = ipaddress.ip_address(_expect(run["bind"], str, "run.bind", "an IP address"))
    except ValueError:
        raise ConfigError("run.bind", f"must be an IP address of one of this host's interfaces, got {run['bind']!r}") from None
    if address.is_unspecified:
        raise ConfigError("run.bind", f"{run['bind']!r} binds every interface; name one (peers dial this address)")
    if run["keys"] is not None:
        if run["transport"] != "tcp":
            raise ConfigError("run.keys", "CURVE keys are used only with run.transport = 'tcp'")
        if not _expect(run["keys"], str, "run.keys", "a key directory").strip():
            raise ConfigError("run.keys", "must name a key directory (synthgrad keys generate DIR)")


def _validate_sg(given: Any, where: str) -> dict:
    """The `sg` table's values by field of `SGOptions` (a dict: `lambda` may still set `lam`)."""
    sg = _merge(SGOptions, _expect(given, dict, where, "a table"), where)
    if sg["model"] not in SG_MODELS:
        raise ConfigError(f"{where}.model", f"must be one of {list(SG_MODELS)}")
    if sg["host"] not in SG_HOSTS:
        raise ConfigError(f"{where}.host", f"must be one of {list(SG_HOSTS)}")
    hidden = _expect(sg["hidden"], list, f"{where}.hidden", "a list of layer widths")
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
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
    _finite(sg["scale"], f"{where}.scale")
    if sg["lr"] is not None:
        _positive_number(sg["lr"], f"{where}.lr")
    _expect(sg["context"], bool, f"{where}.context", "true or false")
    if _expect(sg["cache"], int, f"{where}.cache", "an integer") < 1:
        raise ConfigError(f"{where}.cache", "must be at least 1")
    sg["hidden"], sg["input_hidden"] = tuple(hidden), tuple(widths)
    return sg


def _finite(value: Any, where: str) -> float:
    if not math.isfinite(_expect(value, (int, float), where, "a number")):
        raise ConfigError(where, f"must be a finite number, got {value}")
    return float(value)


def _positive_number(value: Any, where: str) -> float:
    if _finite(value, where) <= 0:
        raise ConfigError(where, f"must be positive, got {value}")
    return float(value)


def _file_name(value: Any, where: str) -> str:
    """A name used in file names and endpoints: plain characters, not too long."""
    _expect(value, str, where, "a string")
    if not NAME_PATTERN.fullmatch(value):
        raise ConfigError(where, f"must be 1-{MAX_NAME} letters, digits, '-', '_' or '.', not starting with '.', got {value!r}")
    return value


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
    given_sg_table = {**defaults.get("sg", {}), **_expect(given.pop("sg", {}), dict, f"{where}.sg", "a table")}
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
        raise unknown_key(where if bad in given else "link_defaults", bad, ["from", "to", "mode", "sg", *LINK_OPTIONS], "link key")
    def at(key: str) -> str:  # named where it is written: the link, or link_defaults
        return f"{where}.{key}" if key in given else f"link_defaults.{key}"

    p_update = None
    if "p_update" in options:
        p_update = _probability(options["p_update"], at("p_update"))
    if "lambda" in options:
        # One place holds lambda: the link option is another spelling of `sg.lam`.
        lam = _probability(options.pop("lambda"), at("lambda"))
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
        raise unknown_key("", unknown[0], ["run", "agents", "links", "link_defaults"], "top-level table")
    run = _validate_run(doc.get("run", {}), default_name)
    agents: dict[str, AgentSpec] = {}
    for name, table in _expect(doc.get("agents", {}), dict, "agents", "a table of agents").items():
        where = f"agents.{name}"
        if not name.replace("_", "").replace("-", "").isalnum() or not name.isascii() or len(name) > MAX_NAME:
            raise ConfigError(where, f"agent names use 1-{MAX_NAME} ASCII letters, digits, '-' and '_' only")
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
    if "sg" in defaults:  # checked on its own, so that a bad default is named where it is
        _validate_sg(defaults["sg"], "link_defaults.sg")
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

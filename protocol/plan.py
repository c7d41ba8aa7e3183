"""Plan records: what a topology becomes once planned, typed and frozen, and their wire form.

The planner (orchestrator/plan.py) turns a validated topology into one `AgentPlan` per agent;
the orchestrator sends each agent its plan in the WELCOME message (`meta["spec"]`) and writes
them all to the run directory's `config.json`.  Everything in between (the agents' runtime,
`compose`, `check_agent`, the fabric cost model) reads these records by attribute; only
`to_wire()` / `from_wire()` here know the key names, so the wire form (msgpack / JSON
primitives, documented in docs/PROTOCOL.md, "The agent's plan") has one definition.

Every default lives here, in the field defaults: `orchestrator/config.py` validates a topology
file against these fields, so a key the file may give is exactly a field of a record.

Records:
    RunSettings   the `[run]` table (step budget, batch sizes, optimiser, timers)
    SGOptions     a link's `sg` table (the synthetic-gradient and synthetic-input models)
    LinkMode      backprop | dni | unlocked | none, with what each mode implies
    LinkPlan      one planned link: resolved ports, mode, options, ticks of both ends
    AgentPlan     one agent: kind, parameters, seed, shapes, its links, the run settings

Torch-free and dependency-free (like the rest of `protocol`), so a planner or an agent in
another process, or another language, can read a plan without torch.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]  # an activation's shape without the batch dimension


class PlanError(ValueError):
    """A wire-form plan that does not fit the records (an unknown or missing key, a bad mode)."""


class LinkMode(str, enum.Enum):
    """How a link's gradient crosses it (the README's "Terms"; the paper's names).

    A `str` enum: its value is the name used in topology files and on the wire.
    """

    BACKPROP = "backprop"  # locked: the sender waits for the true gradient
    DNI = "dni"  # the sender updates at once with a synthetic gradient; targets come later
    UNLOCKED = "unlocked"  # dni plus a synthetic-input model at the receiver (complete unlock)
    NONE = "none"  # no gradient crosses (the paper's "cut" baseline)

    @property
    def carries_gradient(self) -> bool:
        """A gradient (true or synthetic) goes back across the link."""
        return self is not LinkMode.NONE

    @property
    def has_sg_model(self) -> bool:
        """The link has a synthetic-gradient model (on the side `sg.host` names)."""
        return self in (LinkMode.DNI, LinkMode.UNLOCKED)

    @property
    def locked(self) -> bool:
        """The sender always waits for the true gradient before it updates."""
        return self is LinkMode.BACKPROP

    @property
    def has_synthetic_input(self) -> bool:
        """The receiver predicts this link's input from the data (forward unlock)."""
        return self is LinkMode.UNLOCKED


SG_MODELS = ("linear", "mlp", "conv")
SG_HOSTS = ("sender", "receiver")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
NONFINITE_POLICIES = ("stop", "warn", "skip")  # agents/runtime/nonfinite.py
TRANSPORTS = ("ipc", "tcp")  # ipc: one host, private directory; tcp: CurveZMQ mandatory


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_keys(cls: type, data: dict, where: str, optional: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise PlanError(f"{where}: expected a map, got {type(data).__name__}")
    known = set(_fields(cls))
    unknown = sorted(set(data) - known)
    if unknown:
        raise PlanError(f"{where}.{unknown[0]}: unknown key; known: {sorted(known)}")
    required = [n for n, f in _fields(cls).items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data and n not in optional]
    if missing:
        raise PlanError(f"{where}.{missing[0]}: missing")


@dataclass(frozen=True)
class RunSettings:
    """The `[run]` table: one run's budget, batching, optimiser, timers and transport.

    Exactly one of `steps` (training steps) or `epochs` is given (config.py checks it).
    `lr_decay_at`: the paper's step decay; at each listed step every agent's own learning rate
    is multiplied by `lr_decay` once more (the paper divided by 10 at 300k and 400k of 500k).
    """

    name: str | None = None  # the topology file's stem when absent
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 256
    eval_every: int = 0  # steps between evaluations on the test set; 0 = only at the end
    eval_batch_size: int = 1000
    seed: int = 0
    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 3e-4
    eps: float = 1e-8  # Adam's and RMSprop's epsilon (CleanRL's PPO and SB3's A2C use 1e-5)
    lr_decay_at: tuple[int, ...] = ()
    lr_decay: float = 0.1
    # Clip each agent's gradient to this global L2 norm before its optimiser steps (0 = off).
    # Per agent: no process sees another's gradients (CleanRL's PPO clips over the whole net).
    max_grad_norm: float = 0.0
    hwm: int = 4  # messages a data socket buffers before its sender must wait (back-pressure)
    register_timeout_s: float = 60.0
    metrics_every_s: float = 1.0
    on_nonfinite: str = "stop"  # one of NONFINITE_POLICIES: what an agent does with a NaN or inf
    # Fault tolerance (docs/fault-tolerance.md).  Heartbeats go both ways every `heartbeat_s`;
    # an agent silent for `hang_timeout_s` while running is hung: it is killed and, like an
    # agent that died, restarted from its latest checkpoint up to `max_restarts` times, the
    # n-th restart after `restart_backoff_s * 2**(n-1)` seconds.
    heartbeat_s: float = 0.5
    hang_timeout_s: float = 10.0
    max_restarts: int = 3  # per agent; 0 = the first fault ends the run
    restart_backoff_s: float = 0.5
    # A coordinated checkpoint every `checkpoint_every` source steps and/or every
    # `checkpoint_every_s` seconds (0 = not by that measure); the newest `checkpoint_keep` kept.
    checkpoint_every: int = 0
    checkpoint_every_s: float = 30.0
    checkpoint_keep: int = 3
    runs_dir: str = "runs"
    # Watching a run (docs/watching.md): `trace` records every agent's spans into one
    # Chrome/Perfetto trace.json (`synthgrad run --trace`); `tensorboard` writes TensorBoard
    # scalars under RUN_DIR/tensorboard (`--tensorboard`, the synthgrad[tensorboard] extra).
    trace: bool = False
    tensorboard: bool = False
    # Transport (docs/security.md): ipc for one host; tcp binds `tcp://bind:*` (ephemeral
    # ports, reported to peers) with CURVE mandatory, keys from `keys` (a key directory from
    # `synthgrad keys generate`) or, when None, fresh ones in the run directory.
    transport: str = "ipc"  # one of TRANSPORTS
    bind: str = "127.0.0.1"  # the interface address every tcp socket binds (and peers dial)
    keys: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lr_decay_at"] = list(self.lr_decay_at)
        return out

    @classmethod
    def from_wire(cls, data: dict, where: str = "run") -> RunSettings:
        _check_keys(cls, data, where)
        return cls(**{**data, "lr_decay_at": tuple(data.get("lr_decay_at", ()))})


@dataclass(frozen=True)
class SGOptions:
    """A link's `sg` table: its synthetic-gradient model and, in mode `unlocked`, its
    synthetic-input model (agents/runtime/interfaces.py, agents/runtime/synthetic_input.py).

    `lam` is BP(lambda): the gradient a sender uses is ``lam * true + (1 - lam) * synthetic``
    (the link option `lambda` is another spelling of it).
    """

    model: str = "linear"  # one of SG_MODELS
    hidden: tuple[int, ...] = ()  # hidden widths (mlp) or channels (conv)
    lr: float | None = None  # the sender's own learning rate when absent
    scale: float = 1.0  # factor on the synthetic gradient where it is used
    context: bool = False  # condition on the labels (cDNI)
    host: str = "sender"  # one of SG_HOSTS
    cache: int = 64  # steps of (activation, context) kept waiting for their gradient target
    kernel: int = 5  # model = "conv": kernel of every convolution ('same' padding)
    lam: float = 0.0
    input_hidden: tuple[int, ...] = (256,)  # mode "unlocked": hidden widths of the synthetic-input model

    @property
    def sender_hosted(self) -> bool:
        return self.host == "sender"

    def to_wire(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden"], out["input_hidden"] = list(self.hidden), list(self.input_hidden)
        return out

    @classmethod
    def from_wire(cls, data: dict, where: str = "sg") -> SGOptions:
        _check_keys(cls, data, where)
        widths = {k: tuple(data[k]) for k in ("hidden", "input_hidden") if k in data}
        return cls(**{**data, **widths})


@dataclass(frozen=True)
class LinkPlan:
    """One planned link from `src.src_port` to `dst.dst_port`.

    `context` marks a link that carries context (labels, or the data x for a synthetic-input
    model) rather than an activation; `from_source` one that leaves the data source.  Neither
    kind carries a gradient: the planner sets their mode to `none`.  `p_update` is the link
    option of sparse updates (the receiver updates with that probability; the planner resolves
    it per agent into `AgentPlan.p_update`).  `src_tick` and `dst_tick` are the two ends'
    `tick_every`.
    """

    index: int
    src: str
    src_port: str
    dst: str
    dst_port: str
    mode: LinkMode = LinkMode.BACKPROP
    sg: SGOptions = field(default_factory=SGOptions)
    p_update: float | None = None
    context: bool = False
    from_source: bool = False
    src_tick: int = 1
    dst_tick: int = 1
    feedback: bool = False

    @property
    def key(self) -> str:
        """The link's key path in the topology file (`links.N`), for error messages."""
        return f"links.{self.index}"

    @property
    def label(self) -> str:
        """`src->dst`, as metrics name a link."""
        return f"{self.src}->{self.dst}"

    @property
    def messages_per_block(self) -> int:
        """Messages the receiver takes per act: its tick over the sender's."""
        return self.dst_tick // self.src_tick

    def to_wire(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "src": self.src,
            "src_port": self.src_port,
            "dst": self.dst,
            "dst_port": self.dst_port,
            "mode": self.mode.value,
            "sg": self.sg.to_wire(),
            "options": {} if self.p_update is None else {"p_update": self.p_update},
            "context": self.context,
            "from_source": self.from_source,
            "src_tick": self.src_tick,
            "dst_tick": self.dst_tick,
            "feedback": self.feedback,
        }

    @classmethod
    def from_wire(cls, data: dict, where: str = "link") -> LinkPlan:
        data = dict(data)
        options = data.pop("options", {}) or {}
        _check_keys(cls, data, where)
        try:
            mode = LinkMode(data.get("mode", LinkMode.BACKPROP.value))
        except ValueError:
            raise PlanError(f"{where}.mode: {data.get('mode')!r} is not a link mode; choose one of {[m.value for m in LinkMode]}") from None
        return cls(
            **{**data, "mode": mode, "sg": SGOptions.from_wire(data.get("sg", {}), f"{where}.sg"), "p_update": options.get("p_update")}
        )


@dataclass(frozen=True)
class AgentPlan:
    """Everything one agent needs to run, as WELCOME carries it.

    `params` are the kind's own parameters (defaults filled in; each kind reads its own).
    `in_shapes` / `out_shapes` by port, without the batch dimension; a port fed by a faster
    sender has the messages of one block stacked on a leading dimension.  `seed` is the
    agent's own (orchestrator/plan.py `agent_seed`).  `p_update` is the resolved sparse-update
    probability (None: always update).  `cpu` is the host CPU to pin to (`synthgrad run --pin`).
    """

    name: str
    kind: str
    params: dict[str, Any]
    run: RunSettings
    seed: int = 0
    tick_every: int = 1
    num_classes: int = 0
    in_shapes: dict[str, Shape] = field(default_factory=dict)
    out_shapes: dict[str, Shape] = field(default_factory=dict)
    in_links: tuple[LinkPlan, ...] = ()
    out_links: tuple[LinkPlan, ...] = ()
    p_update: float | None = None
    cpu: int | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "params": dict(self.params),
            "tick_every": self.tick_every,
            "seed": self.seed,
            "run": self.run.to_wire(),
            "num_classes": self.num_classes,
            "in_shapes": {p: list(s) for p, s in self.in_shapes.items()},
            "out_shapes": {p: list(s) for p, s in self.out_shapes.items()},
            "in_links": [link.to_wire() for link in self.in_links],
            "out_links": [link.to_wire() for link in self.out_links],
            "p_update": self.p_update,
        }
        if self.cpu is not None:
            out["cpu"] = self.cpu
        return out

    @classmethod
    def from_wire(cls, data: dict, where: str = "spec") -> AgentPlan:
        _check_keys(cls, data, where)
        name = data["name"]
        return cls(
            **{
                **data,
                "run": RunSettings.from_wire(data["run"], f"{where}.run"),
                "in_shapes": {p: tuple(s) for p, s in data.get("in_shapes", {}).items()},
                "out_shapes": {p: tuple(s) for p, s in data.get("out_shapes", {}).items()},
                "in_links": tuple(LinkPlan.from_wire(x, f"{where}.in_links.{name}") for x in data.get("in_links", ())),
                "out_links": tuple(LinkPlan.from_wire(x, f"{where}.out_links.{name}") for x in data.get("out_links", ())),
            }
        )

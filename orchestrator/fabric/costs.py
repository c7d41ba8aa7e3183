"""What each agent and link costs, as plain data, and the figures derived from it.

The core of the cost model takes numbers, not modules: per agent the FLOPs of one tick
(forward, backward, optimiser update) at the workload's batch, the SRAM its parameters and its
per-step caches need, and its tick rate; per link the bytes of one message and the synthetic-
gradient (SG) and synthetic-input (SI) models the link's mode adds.  `modelcost.py` fills these
from real torch modules; `chain_workload` writes them down analytically for large benchmarks.

Tick rates: an agent with `tick_every = T` acts on every T-th step, so its compute counts 1/T per
step; a link carries a message on the steps both its ends act (every lcm(T_src, T_dst) steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .errors import UnknownName

MODES = ("backprop", "dni", "unlocked", "none")
SCHEDULES = ("gpipe", "1f1b")
GRADIENT_MODES = ("backprop", "dni", "unlocked")  # links that send a gradient back
ADAM_FLOPS_PER_PARAM = 12  # m, v, bias corrections, sqrt, divide, step
SGD_FLOPS_PER_PARAM = 2


@dataclass
class AgentCost:
    """One agent's cost per tick at the workload's batch size."""

    name: str
    fwd_flops: float = 0.0
    bwd_flops: float = 0.0  # through the module: input gradient + weight gradient
    update_flops: float = 0.0  # one optimiser step
    param_bytes: float = 0.0  # weights + gradients + optimiser state
    cache_bytes: float = 0.0  # activations kept for one step in flight (for backward)
    tick_every: int = 1
    rows: int = 0  # matrix rows of one tick; fewer than the core's 8-row face run slower
    kind: str = ""


@dataclass
class LinkCost:
    """One link: the message it carries and the models its mode adds.

    The SG model lives on the sender (`sg_*`), the synthetic-input model on the receiver
    (`si_*`, used only in `unlocked` mode).  A gradient message is as large as the activation.
    """

    src: str
    dst: str
    bytes: float
    mode: str = "dni"
    sg_flops: float = 0.0  # SG forward, per message
    sg_train_flops: float = 0.0  # SG regression step, per gradient target
    sg_bytes: float = 0.0  # SG parameters + gradients + optimiser state
    si_flops: float = 0.0
    si_train_flops: float = 0.0
    si_bytes: float = 0.0


@dataclass
class Workload:
    """Agents (in topological order) and links of one topology at one batch size."""

    agents: list[AgentCost]
    links: list[LinkCost]
    batch: int = 1
    name: str = ""
    notes: list[str] = field(default_factory=list)  # how the costs were obtained, caveats
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {a.name: i for i, a in enumerate(self.agents)}
        for link in self.links:
            if link.mode not in MODES:
                raise UnknownName("link mode", link.mode, MODES)
            for end in (link.src, link.dst):
                if end not in self.index:
                    raise ValueError(f"link {link.src}->{link.dst}: no agent named {end!r}")

    def with_mode(self, mode: str | None) -> Workload:
        """The same workload with every gradient-carrying link set to `mode` (None: as given)."""
        if mode is None:
            return self
        if mode not in MODES:
            raise UnknownName("mode", mode, MODES)
        links = [link if link.mode == "none" else replace(link, mode=mode) for link in self.links]
        return Workload([replace(a) for a in self.agents], links, self.batch, self.name, list(self.notes))

    def every(self, link: LinkCost) -> int:
        """A message crosses `link` every this many steps."""
        a, b = self.agents[self.index[link.src]], self.agents[self.index[link.dst]]
        return math.lcm(a.tick_every, b.tick_every)

    def locked_agents(self) -> set[str]:
        """Agents that wait for a true gradient (they have a `backprop` out-link)."""
        return {link.src for link in self.links if link.mode == "backprop"}


@dataclass(frozen=True)
class Phases:
    """FLOPs of one agent's tick, split by phase, under the links' modes."""

    fwd: float
    bwd: float
    update: float
    sg: float  # SG forwards for its dni/unlocked out-links
    sg_train: float  # SG training, once per gradient target
    si: float  # synthetic-input forwards for its unlocked in-links
    si_train: float


def phases(w: Workload) -> dict[str, Phases]:
    """Per-agent phase FLOPs per tick; SG and SI costs follow the link modes."""
    sg = dict.fromkeys(w.index, 0.0)
    sg_train, si, si_train = dict(sg), dict(sg), dict(sg)
    for link in w.links:
        if link.mode in ("dni", "unlocked"):
            sg[link.src] += link.sg_flops
            sg_train[link.src] += link.sg_train_flops
        if link.mode == "unlocked":
            si[link.dst] += link.si_flops
            si_train[link.dst] += link.si_train_flops
    return {
        a.name: Phases(a.fwd_flops, a.bwd_flops, a.update_flops, sg[a.name], sg_train[a.name],
                       si[a.name], si_train[a.name])
        for a in w.agents
    }


def step_flops(w: Workload, microbatches: int = 1) -> dict[str, float]:
    """Average FLOPs per (micro-)step of each agent: the compute load placement balances.

    A locked agent updates once per `microbatches` steps; a decoupled one every tick; an agent
    on an `unlocked` in-link forwards twice (on the predicted input, then on the real one).
    """
    locked = w.locked_agents()
    unlocked = {link.dst for link in w.links if link.mode == "unlocked"}
    out = {}
    ph = phases(w)
    for a in w.agents:
        p = ph[a.name]
        update = p.update / microbatches if a.name in locked else p.update
        again = p.fwd if a.name in unlocked else 0.0
        out[a.name] = (p.fwd + again + p.bwd + update + p.sg + p.sg_train + p.si + p.si_train) / a.tick_every
    return out


def depth_to_sink(w: Workload) -> dict[str, int]:
    """Agents below each agent on its longest path to a sink (gradient-carrying links)."""
    out_links: dict[str, list[str]] = {name: [] for name in w.index}
    for link in w.links:
        if link.mode != "none":
            out_links[link.src].append(link.dst)
    below = dict.fromkeys(w.index, 0)
    for a in reversed(w.agents):
        for dst in out_links[a.name]:
            below[a.name] = max(below[a.name], below[dst] + 1)
    return below


def sram_bytes(w: Workload, microbatches: int = 1, schedule: str = "gpipe", inflight: int = 2) -> dict[str, float]:
    """SRAM each agent needs: parameters and optimiser state, its SG/SI models, and caches.

    A locked agent keeps its backward's activations (`cache_bytes`) for every micro-batch in
    flight: M under GPipe, at most the stages below plus one under 1F1B.  A decoupled agent
    runs its backward within the tick, so it keeps them once, plus, for `inflight` steps, the
    activations its SG models regress on (and, unlocked, the inputs its SI models regress on).
    """
    if schedule not in SCHEDULES:
        raise UnknownName("schedule", schedule, SCHEDULES)
    below = depth_to_sink(w)
    locked = w.locked_agents()
    models = dict.fromkeys(w.index, 0.0)
    waiting = dict.fromkeys(w.index, 0.0)
    for link in w.links:
        if link.mode in ("dni", "unlocked"):
            models[link.src] += link.sg_bytes
            waiting[link.src] += link.bytes
        if link.mode == "unlocked":
            models[link.dst] += link.si_bytes
            waiting[link.dst] += link.bytes
    out = {}
    for a in w.agents:
        if a.name in locked:
            depth = microbatches if schedule == "gpipe" else min(microbatches, below[a.name] + 1)
            acts = depth * a.cache_bytes
        else:
            acts = a.cache_bytes + inflight * waiting[a.name]
        out[a.name] = a.param_bytes + models[a.name] + acts
    return out


def flows(w: Workload) -> list[tuple[str, str, float, int]]:
    """Directed message flows (src, dst, bytes per message, every N steps): activations
    forward, and gradients backward on every link whose mode carries one."""
    out = []
    for link in w.links:
        every = w.every(link)
        out.append((link.src, link.dst, link.bytes, every))
        if link.mode in GRADIENT_MODES:
            out.append((link.dst, link.src, link.bytes, every))
    return out


def chain_workload(layers: int, width: int = 256, batch: int = 256, in_features: int = 784,
                   classes: int = 10, mode: str = "dni", dtype_bytes: int = 2,
                   optimizer: str = "adam", name: str = "") -> Workload:
    """A source, `layers` dense layers (Linear -> BatchNorm -> ReLU) and a head, written down
    analytically with the same formulas `modelcost.count_flops` applies to real modules.

    Used for workloads too large to build as torch modules (1,000 agents); SG models linear.
    """
    per_param = 4 * dtype_bytes if optimizer == "adam" else 2 * dtype_bytes
    upd = ADAM_FLOPS_PER_PARAM if optimizer == "adam" else SGD_FLOPS_PER_PARAM

    def dense(fan_in: int, fan_out: int, bn: bool) -> tuple[float, float, float]:
        linear = 2 * batch * fan_in * fan_out + (0 if bn else batch * fan_out)
        elementwise = batch * fan_out * (5 + 1 if bn else 5)  # BatchNorm + ReLU, or the loss
        params = fan_in * fan_out + (2 * fan_out if bn else fan_out)  # no Linear bias before BN
        return linear + elementwise, params, batch * (fan_in + fan_out * (3 if bn else 1))

    agents = [AgentCost("source", kind="source", rows=batch)]
    links = []
    prev, fan_in = "source", in_features
    sg_fwd = 2 * batch * width * width + batch * width
    sg_params = width * width + width
    for i in range(1, layers + 1):
        fwd, params, cached = dense(fan_in, width, bn=True)
        agents.append(AgentCost(f"l{i}", fwd, 2 * fwd, upd * params, per_param * params,
                                cached * dtype_bytes, rows=batch, kind="dense"))
        if prev == "source":  # data carries no gradient and has no SG model
            links.append(LinkCost(prev, f"l{i}", batch * fan_in * dtype_bytes, "none"))
        else:
            links.append(LinkCost(prev, f"l{i}", batch * fan_in * dtype_bytes, mode, sg_fwd,
                                  3 * sg_fwd + upd * sg_params, per_param * sg_params))
        prev, fan_in = f"l{i}", width
    fwd, params, cached = dense(width, classes, bn=False)
    agents.append(AgentCost("head", fwd, 2 * fwd, upd * params, per_param * params, cached * dtype_bytes,
                            rows=batch, kind="head"))
    links.append(LinkCost(prev, "head", batch * width * dtype_bytes, mode, sg_fwd,
                          3 * sg_fwd + upd * sg_params, per_param * sg_params))
    links.append(LinkCost("source", "head", batch * 8, "none"))  # int64 labels
    return Workload(agents, links, batch, name or f"chain{layers}")

"""Placement: which core(s) each agent lives on, what that costs, and the baseline placers.

An agent whose SRAM exceeds one core's usable L1 is split into `units` (pieces) over several
cores of one chip, as a sharded tensor is; its messages are then split over the pieces, and
the pieces exchange their shards in a ring (an all-gather of the agent's output per tick).
Several agents may share a core while SRAM allows and their summed compute per step stays
within `share_slack` of the busiest unit's (or of the average per core when agents outnumber
cores): sharing never makes the pipeline's slowest stage slower by more than that.

Placement cost, per step: `hop_bytes` = sum over message flows of bytes x links traversed;
`max_link_load` = bytes on the busiest link (highest load / capacity, NoC or Ethernet).  The
search methods minimise `objective` = weighted hop-bytes (an Ethernet hop counts as many NoC
hops as its bandwidth is smaller) + `lam` x the busiest link's load in NoC-link bytes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .costs import Workload, flows, sram_bytes, step_flops
from .errors import PlacementError
from .fabric import Fabric

DEFAULT_LAM = 4.0  # weight of the busiest link's load against total hop-bytes


@dataclass
class Problem:
    """Units (agents or pieces of agents) with SRAM and compute demand, and flows between them."""

    fabric: Fabric
    workload: Workload
    agent_names: list[str]
    agent_units: list[list[int]]
    unit_agent: np.ndarray
    unit_sram: np.ndarray  # bytes
    unit_load: np.ndarray  # seconds of compute per step on one core
    load_cap: float  # most compute seconds per step one core may carry
    e_src: np.ndarray
    e_dst: np.ndarray
    e_bytes: np.ndarray  # bytes per step
    lam: float = DEFAULT_LAM
    adjacency: list[list[int]] = field(default_factory=list)  # per unit, incident edge ids

    @property
    def n_units(self) -> int:
        return len(self.unit_agent)


def compute_seconds(fabric: Fabric, flops: float, rows: int) -> float:
    """Time one core takes for `flops` FLOPs with `rows` matrix rows (0: no skinny derating)."""
    s = fabric.spec
    skinny = 1.0 if rows <= 0 else min(1.0, rows / s.skinny_rows)
    return flops / (s.core_flops_per_s * s.efficiency * skinny)


def shard_pairs(src: list[int], dst: list[int]) -> list[tuple[int, int]]:
    """A message between agents split into pieces travels as max(n_src, n_dst) equal shards,
    shard j from piece j mod n_src to piece j mod n_dst."""
    k = max(len(src), len(dst))
    return [(src[j % len(src)], dst[j % len(dst)]) for j in range(k)]


def build_problem(workload: Workload, fabric: Fabric, microbatches: int = 1, schedule: str = "gpipe",
                  share_slack: float = 0.1, lam: float = DEFAULT_LAM) -> Problem:
    """Split agents into units by SRAM and list the flows between units.

    Raises:
        PlacementError: an agent needs more cores than one chip has, or the agents' SRAM
            exceeds the fabric's.
    """
    s = fabric.spec
    usable = s.usable_sram_bytes
    sram = sram_bytes(workload, microbatches, schedule)
    load = step_flops(workload, microbatches)
    names = [a.name for a in workload.agents]
    agent_units: list[list[int]] = []
    unit_agent, unit_sram, unit_load = [], [], []
    for i, a in enumerate(workload.agents):
        n = max(1, math.ceil(sram[a.name] / usable))
        if n > s.cores_per_chip:
            raise PlacementError(
                f"agent {a.name!r} needs {sram[a.name] / 1e6:.1f} MB of SRAM = {n} cores of "
                f"{usable / 1e6:.2f} MB; one chip of {fabric.name!r} has {s.cores_per_chip} cores"
            )
        secs = compute_seconds(fabric, load[a.name], a.rows) / n
        agent_units.append(list(range(len(unit_agent), len(unit_agent) + n)))
        unit_agent += [i] * n
        unit_sram += [sram[a.name] / n] * n
        unit_load += [secs] * n
    total = sum(sram.values())
    if total > fabric.n_cores * usable:
        raise PlacementError(
            f"the agents need {total / 1e6:.1f} MB of SRAM; fabric {fabric.name!r} has "
            f"{fabric.n_cores} cores x {usable / 1e6:.2f} MB = {fabric.n_cores * usable / 1e6:.1f} MB usable"
        )
    loads = np.array(unit_load, dtype=float)
    cap = max(loads.max(initial=0.0), loads.sum() / fabric.n_cores) * (1.0 + share_slack)
    edges: dict[tuple[int, int], float] = {}
    out_bytes = [0.0] * len(names)
    for src, dst, nbytes, every in flows(workload):
        i, j = workload.index[src], workload.index[dst]
        out_bytes[i] = max(out_bytes[i], nbytes / every)
        pairs = shard_pairs(agent_units[i], agent_units[j])
        for key in pairs:
            edges[key] = edges.get(key, 0.0) + nbytes / every / len(pairs)
    for i, units in enumerate(agent_units):  # ring all-gather among the pieces of a split agent
        n = len(units)
        if n > 1:
            ring = out_bytes[i] * (n - 1) / n / workload.agents[i].tick_every
            for k in range(n):
                key = (units[k], units[(k + 1) % n])
                edges[key] = edges.get(key, 0.0) + ring
    keys = [k for k, v in edges.items() if k[0] != k[1] and v > 0]
    e_src = np.array([k[0] for k in keys], dtype=np.int64)
    e_dst = np.array([k[1] for k in keys], dtype=np.int64)
    adjacency: list[list[int]] = [[] for _ in unit_agent]
    for e, (a, b) in enumerate(keys):
        adjacency[a].append(e)
        adjacency[b].append(e)
    return Problem(fabric, workload, names, agent_units, np.array(unit_agent), np.array(unit_sram, dtype=float),
                   loads, cap, e_src, e_dst, np.array([edges[k] for k in keys], dtype=float), lam, adjacency)


def link_weights(fabric: Fabric) -> np.ndarray:
    """Per resource: NoC-link bytes one byte on it is worth (0 for NIU ports, not links)."""
    w = fabric.spec.link_bytes_per_s / fabric.capacity
    wh = fabric.W * fabric.H
    for chip in range(fabric.spec.chips):
        base = chip * 8 * wh
        w[base + 4 * wh : base + 8 * wh] = 0.0
    return w


def link_loads(problem: Problem, unit_core: np.ndarray) -> np.ndarray:
    """Bytes per step on every fabric resource under a placement."""
    fabric = problem.fabric
    loads = np.zeros(fabric.n_resources)
    for a, b, nbytes in zip(unit_core[problem.e_src], unit_core[problem.e_dst], problem.e_bytes, strict=True):
        if a != b:
            loads[list(fabric.route(int(a), int(b)).resources)] += nbytes
    return loads


def evaluate(problem: Problem, unit_core: np.ndarray) -> dict:
    """The cost of a placement (see the module docstring for the terms)."""
    fabric = problem.fabric
    a, b = unit_core[problem.e_src], unit_core[problem.e_dst]
    hop_bytes = float((problem.e_bytes * fabric.hops[a, b]).sum())
    weighted = float((problem.e_bytes * fabric.distance[a, b]).sum())
    loads = link_loads(problem, unit_core)
    weights = link_weights(fabric)
    busy = loads * weights
    worst = int(busy.argmax()) if busy.size else 0
    max_weighted = float(busy[worst]) if busy.size else 0.0
    return {
        "hop_bytes": hop_bytes,
        "max_link_load": float(loads[worst]) if max_weighted > 0 else 0.0,
        "max_link": fabric.describe_resource(worst) if max_weighted > 0 else "",
        "max_link_time_s": float(loads[worst] / fabric.capacity[worst]) if max_weighted > 0 else 0.0,
        "weighted_hop_bytes": weighted,
        "eth_bytes": float(loads[fabric._eth_base :].sum()),
        "objective": weighted + problem.lam * max_weighted,
        "cores_used": int(len(np.unique(unit_core))),
    }


@dataclass
class Placement:
    """Agents on cores: the result every placement method returns."""

    problem: Problem
    unit_core: np.ndarray
    method: str
    seconds: float = 0.0
    cost: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    @property
    def fabric(self) -> Fabric:
        return self.problem.fabric

    def cores_of(self, agent: str) -> list[int]:
        """Core indices an agent occupies (several when it is split)."""
        units = self.problem.agent_units[self.problem.agent_names.index(agent)]
        return [int(self.unit_core[u]) for u in units]

    def as_dict(self) -> dict:
        """JSON-ready: `placement` (agent -> chip, x, y of its first core, and all its cores)."""
        out = {}
        for name in self.problem.agent_names:
            cores = [self.fabric.coords(c) for c in self.cores_of(name)]
            chip, x, y = cores[0]
            out[name] = {"chip": chip, "x": x, "y": y, "cores": [list(c) for c in cores]}
        return {"fabric": self.fabric.name, "method": self.method, "placement": out,
                "cost": self.cost, "seconds": self.seconds, **self.notes}


def check(problem: Problem, unit_core: np.ndarray) -> None:
    """Raise if a placement breaks SRAM or compute capacity, or splits an agent across chips."""
    fabric = problem.fabric
    sram = np.bincount(unit_core, weights=problem.unit_sram, minlength=fabric.n_cores)
    load = np.bincount(unit_core, weights=problem.unit_load, minlength=fabric.n_cores)
    if (sram > fabric.spec.usable_sram_bytes * (1 + 1e-9)).any():
        raise PlacementError(f"core {int(sram.argmax())} holds {sram.max():.0f} B of SRAM")
    if (load > problem.load_cap * (1 + 1e-9)).any():
        raise PlacementError(f"core {int(load.argmax())} exceeds the compute cap")
    for units in problem.agent_units:
        if len({int(fabric.core_chip[unit_core[u]]) for u in units}) > 1:
            raise PlacementError("a split agent spans chips")


def first_fit(problem: Problem, order: np.ndarray | None = None) -> np.ndarray:
    """Each agent, in topological order, on the first core(s) of `order` where it fits.

    With the default row-major order this is the vendor compiler's placer (TT-Buda's
    `get_first_free_location`): the baseline.  A split agent takes the first cores of the
    first chip that can hold all its pieces.
    """
    fabric = problem.fabric
    order = np.arange(fabric.n_cores) if order is None else order
    sram_used = np.zeros(fabric.n_cores)
    load_used = np.zeros(fabric.n_cores)
    unit_core = np.full(problem.n_units, -1, dtype=np.int64)
    chips_in_order = list(dict.fromkeys(fabric.core_chip[order].tolist()))
    usable = fabric.spec.usable_sram_bytes
    for units in problem.agent_units:
        for chip in chips_in_order if len(units) > 1 else [None]:
            cores = order if chip is None else order[fabric.core_chip[order] == chip]
            taken = []
            for u in units:
                ok = ((sram_used[cores] + problem.unit_sram[u] <= usable)
                      & (load_used[cores] + problem.unit_load[u] <= problem.load_cap))
                if not ok.any():
                    break
                core = int(cores[int(ok.argmax())])
                taken.append((u, core))
                sram_used[core] += problem.unit_sram[u]
                load_used[core] += problem.unit_load[u]
            if len(taken) == len(units):
                for u, core in taken:
                    unit_core[u] = core
                break
            for u, core in taken:  # this chip cannot hold the whole agent: undo, try the next
                sram_used[core] -= problem.unit_sram[u]
                load_used[core] -= problem.unit_load[u]
        else:
            name = problem.agent_names[problem.unit_agent[units[0]]]
            raise PlacementError(no_room(problem, name))
    return unit_core


def no_room(problem: Problem, agent: str) -> str:
    fabric = problem.fabric
    need = problem.unit_sram.sum() / fabric.spec.usable_sram_bytes
    return (f"agent {agent!r} does not fit: the {problem.n_units} agent pieces need about "
            f"{need:.0f} cores' SRAM and cannot share cores beyond the compute cap; "
            f"{fabric.name!r} has {fabric.n_cores} cores")


def snake_order(fabric: Fabric) -> np.ndarray:
    """Boustrophedon order: chips snake over the chip mesh, rows snake within each chip."""
    s = fabric.spec
    ncol, nrow = len(s.core_columns), len(s.core_rows)
    local = []
    for r in range(nrow):
        cols = range(ncol) if r % 2 == 0 else range(ncol - 1, -1, -1)
        local += [r * ncol + c for c in cols]
    order = []
    for cr in range(s.chip_rows):
        ccs = range(s.chip_cols) if cr % 2 == 0 else range(s.chip_cols - 1, -1, -1)
        for cc in ccs:
            chip = cr * s.chip_cols + cc
            order += [chip * s.cores_per_chip + k for k in local]
    return np.array(order, dtype=np.int64)


def timed(method: str, problem: Problem, fn, *args, **kwargs) -> Placement:
    t0 = time.perf_counter()
    result = fn(problem, *args, **kwargs)
    notes = {}
    if isinstance(result, tuple):
        result, notes = result
    seconds = time.perf_counter() - t0
    check(problem, result)
    return Placement(problem, result, method, seconds, evaluate(problem, result), notes)

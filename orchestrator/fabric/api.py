"""The fabric model's entry points: place a workload or a topology, by method name."""

from __future__ import annotations

import time

from .costs import Workload
from .errors import UnknownName
from .fabric import Fabric
from .placement import DEFAULT_LAM, Placement, Problem, build_problem, first_fit, snake_order, timed
from .search import anneal, exact, greedy, swaps

METHODS = ("row-major", "snake", "greedy", "anneal", "exact")


def _greedy_swaps(problem: Problem, seconds: float):
    return swaps(problem, greedy(problem), deadline=time.perf_counter() + seconds)


def place_problem(problem: Problem, method: str = "anneal", seconds: float = 10.0, seed: int = 0,
                  start: Placement | None = None) -> Placement:
    """Place an already built `Problem` with one method (see `METHODS`)."""
    if method == "row-major":
        return timed(method, problem, first_fit)
    if method == "snake":
        return timed(method, problem, first_fit, snake_order(problem.fabric))
    if method == "greedy":
        return timed(method, problem, _greedy_swaps, seconds)
    if method == "anneal":
        begin = None if start is None else start.unit_core
        return timed(method, problem, anneal, begin, seconds=seconds, seed=seed)
    if method == "exact":
        upper = None if start is None else start.unit_core
        return timed(method, problem, exact, upper)
    raise UnknownName("placement method", method, METHODS)


def place(workload: Workload, fabric: Fabric | str, method: str = "anneal", *, microbatches: int = 1,
          schedule: str = "gpipe", lam: float = DEFAULT_LAM, seconds: float = 10.0, seed: int = 0) -> Placement:
    """Place a workload's agents on a fabric.

    Raises:
        UnknownName: unknown method or preset (the message lists the known ones).
        PlacementError: the agents do not fit (SRAM or cores); the message says which.
    """
    if method not in METHODS:
        raise UnknownName("placement method", method, METHODS)
    if isinstance(fabric, str):
        fabric = Fabric.from_name(fabric)
    problem = build_problem(workload, fabric, microbatches, schedule, lam=lam)
    return place_problem(problem, method, seconds, seed)


def place_topology(topology, fabric_name: str = "wormhole_n150", method: str = "anneal", *,
                   seconds: float = 10.0, seed: int = 0, module_builder=None) -> Placement:
    """Place a loaded topology (`synthgrad.orchestrator.config.load_topology`) on a fabric.

    Costs come from the agents' real modules (`modelcost.costs_from_topology`).
    """
    from .modelcost import costs_from_topology

    workload = costs_from_topology(topology, module_builder=module_builder)
    return place(workload, fabric_name, method, seconds=seconds, seed=seed)


def cpu_plan(placement: Placement, cpus: list[int]) -> dict[str, int]:
    """Map every agent to one of the host's `cpus` for a local run: agents in fabric order
    (row-major over cores), cut into contiguous groups of about equal compute, so agents that
    are neighbours on the fabric share a CPU and its caches."""
    if not cpus:
        raise ValueError("cpu_plan needs at least one CPU")
    problem = placement.problem
    names = sorted(problem.agent_names, key=lambda n: min(placement.cores_of(n)))
    load = {n: sum(problem.unit_load[u] for u in problem.agent_units[problem.agent_names.index(n)]) for n in names}
    total = sum(load.values()) or 1.0
    plan, acc = {}, 0.0
    for name in names:
        slot = min(int(acc / total * len(cpus)), len(cpus) - 1)
        plan[name] = cpus[slot]
        acc += load[name]
    return plan

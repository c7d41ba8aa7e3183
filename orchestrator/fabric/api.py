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

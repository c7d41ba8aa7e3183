"""Placement search: greedy by traffic with pairwise swaps, simulated annealing, exact search.

All three minimise the same objective as `placement.evaluate`: weighted hop-bytes plus `lam`
times the busiest link's load (NoC-link bytes per step).  `_State` keeps a placement with its
core capacities, its hop cost and its per-link loads, and prices a move or a swap of units
incrementally, so annealing can try tens of thousands of moves a second.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np

from .errors import PlacementError
from .placement import Problem, link_weights, no_room

NEAR = 12  # candidate cores per core: the nearest ones
_TIE = 1e-9  # relative tolerance for "this link carries the maximum load"


class _State:
    """A mutable placement priced incrementally (plain lists: faster than numpy per move)."""

    def __init__(self, problem: Problem, unit_core: np.ndarray) -> None:
        self.p = problem
        f = problem.fabric
        self.n = f.n_cores
        self.core = [int(c) for c in unit_core]
        self.D = f.distance_flat
        self.src = problem.e_src.tolist()
        self.dst = problem.e_dst.tolist()
        self.nbytes = problem.e_bytes.tolist()
        self.adj = problem.adjacency
        self.sram = np.bincount(unit_core, weights=problem.unit_sram, minlength=self.n).tolist()
        self.load = np.bincount(unit_core, weights=problem.unit_load, minlength=self.n).tolist()
        self.on_core: list[list[int]] = [[] for _ in range(self.n)]
        for u, c in enumerate(self.core):
            self.on_core[c].append(u)
        self.split = [len(problem.agent_units[a]) > 1 for a in problem.unit_agent]
        self.chip = f.core_chip.tolist()
        self.lam = problem.lam
        self.weights = link_weights(f).tolist()
        self._routes: dict[tuple[int, int], list[tuple[int, float]]] = {}
        self.wl: dict[int, float] = {}  # load of every loaded link, NoC-link bytes per step
        self.max = 0.0
        self.at: set[int] = set()  # links whose load is (within _TIE of) the maximum
        if self.lam > 0:
            for e in range(len(self.src)):
                self._add_route(e, self.core[self.src[e]], self.core[self.dst[e]], 1.0)
        self.max = self._busiest()
        self.hop = sum(self.nbytes[e] * self.D[self.core[self.src[e]] * self.n + self.core[self.dst[e]]]
                       for e in range(len(self.src)))

    @property
    def objective(self) -> float:
        return self.hop + self.lam * self.max

    def _route(self, a: int, b: int) -> list[tuple[int, float]]:
        hit = self._routes.get((a, b))
        if hit is None:
            w = self.weights
            hit = [(r, w[r]) for r in self.p.fabric.route(a, b).resources if w[r] > 0]
            self._routes[(a, b)] = hit
        return hit

    def _add_route(self, e: int, a: int, b: int, sign: float) -> None:
        """Add (sign=+1) or remove a flow's load, keeping `max` and the links `at` it."""
        if a == b:
            return
        x = sign * self.nbytes[e]
        wl, at = self.wl, self.at
        hi = self.max * (1 + _TIE)
        lo = self.max * (1 - _TIE)
        route = self._routes.get((a, b)) or self._route(a, b)
        for r, w in route:
            v = wl.get(r, 0.0) + x * w
            if v <= 1e-6:  # float crumbs of a link that is empty again
                wl.pop(r, None)
                v = 0.0
            else:
                wl[r] = v
            if v > hi:
                self.max, hi, lo = v, v * (1 + _TIE), v * (1 - _TIE)
                at.clear()
                at.add(r)
            elif v >= lo:
                at.add(r)
            elif r in at:
                at.discard(r)

    def _busiest(self) -> float:
        """The largest link load; a full scan only when every link at the maximum dropped."""
        if not self.at:
            wl = self.wl
            self.max = max(wl.values(), default=0.0)
            lo = self.max * (1 - _TIE)
            self.at = {r for r, v in wl.items() if v >= lo}
        return self.max

    def max_can_drop(self, edges: list[int]) -> bool:
        """Could moving these edges lower the busiest link?  Only if one of them crosses it."""
        if self.lam == 0:
            return False
        at, core, routes = self.at, self.core, self._routes
        for e in edges:
            a, b = core[self.src[e]], core[self.dst[e]]
            if a != b:
                for r, _ in routes.get((a, b)) or self._route(a, b):
                    if r in at:
                        return True
        return False

    def feasible(self, moves: dict[int, int]) -> bool:
        """Would applying `moves` (unit -> new core) respect capacities and chip rules?"""
        p = self.p
        usable, cap = p.fabric.spec.usable_sram_bytes, p.load_cap
        delta_s: dict[int, float] = {}
        delta_l: dict[int, float] = {}
        for u, c in moves.items():
            old = self.core[u]
            if self.split[u] and self.chip[c] != self.chip[old]:
                return False
            delta_s[old] = delta_s.get(old, 0.0) - p.unit_sram[u]
            delta_s[c] = delta_s.get(c, 0.0) + p.unit_sram[u]
            delta_l[old] = delta_l.get(old, 0.0) - p.unit_load[u]
            delta_l[c] = delta_l.get(c, 0.0) + p.unit_load[u]
        for c, ds in delta_s.items():
            if ds > 0 and self.sram[c] + ds > usable:
                return False
        return all(not (dl > 0 and self.load[c] + dl > cap * (1 + 1e-12)) for c, dl in delta_l.items())

    def delta(self, moves: dict[int, int]) -> tuple[float, list[int]]:
        """Change of hop cost under `moves`, and the edges they touch."""
        edges = set()
        for u in moves:
            edges.update(self.adj[u])
        D, n, core = self.D, self.n, self.core
        d = 0.0
        for e in edges:
            s, t = self.src[e], self.dst[e]
            a, b = core[s], core[t]
            a2, b2 = moves.get(s, a), moves.get(t, b)
            d += self.nbytes[e] * (D[a2 * n + b2] - D[a * n + b])
        return d, list(edges)

    def apply(self, moves: dict[int, int], edges: list[int], hop_delta: float) -> None:
        """Apply `moves`, keeping hop cost, capacities and the busiest link exact."""
        core = self.core
        if self.lam > 0:
            for e in edges:
                self._add_route(e, core[self.src[e]], core[self.dst[e]], -1.0)
        for u, c in moves.items():
            old = core[u]
            self.on_core[old].remove(u)
            self.on_core[c].append(u)
            self.sram[old] -= self.p.unit_sram[u]
            self.sram[c] += self.p.unit_sram[u]
            self.load[old] -= self.p.unit_load[u]
            self.load[c] += self.p.unit_load[u]
            core[u] = c
        self.hop += hop_delta
        if self.lam > 0:
            for e in edges:
                self._add_route(e, core[self.src[e]], core[self.dst[e]], 1.0)
            self.max = self._busiest()

    def undo(self, old: dict[int, int], edges: list[int], hop_delta: float) -> None:
        self.apply(old, edges, -hop_delta)

    def propose(self, u: int, c: int, rng: random.Random) -> dict[int, int] | None:
        """Move `u` to core `c`, or swap it with a unit there; None if neither is feasible."""
        cu = self.core[u]
        if c == cu:
            return None
        moves = {u: c}
        if self.feasible(moves):
            return moves
        here = self.on_core[c]
        if not here:
            return None
        w = here[rng.randrange(len(here))] if len(here) > 1 else here[0]
        moves = {u: c, w: cu}
        return moves if self.feasible(moves) else None


def near_cores(problem: Problem, k: int = NEAR) -> np.ndarray:
    """For each core, the `k` nearest cores (itself excluded) by placement distance."""
    d = problem.fabric.distance
    sym = d + d.T
    np.fill_diagonal(sym, np.inf)
    k = min(k, d.shape[0] - 1)
    if k <= 0:
        return np.zeros((d.shape[0], 0), dtype=np.int64)
    return np.argpartition(sym, k - 1, axis=1)[:, :k]


def greedy(problem: Problem) -> np.ndarray:
    """NMAP-style: the agent with most traffic first, then repeatedly the agent with most
    traffic to those placed; each of its pieces goes on the feasible core that adds the least
    weighted hop-bytes (all pieces of a split agent on one chip)."""
    f = problem.fabric
    n_units, n_cores = problem.n_units, f.n_cores
    D = f.distance
    usable = f.spec.usable_sram_bytes
    n_agents = len(problem.agent_units)
    ua = problem.unit_agent
    total = np.bincount(ua[problem.e_src], weights=problem.e_bytes, minlength=n_agents) + np.bincount(
        ua[problem.e_dst], weights=problem.e_bytes, minlength=n_agents)
    attach = np.zeros(n_agents)
    done = np.zeros(n_agents, dtype=bool)
    placed = np.zeros(n_units, dtype=bool)
    unit_core = np.full(n_units, -1, dtype=np.int64)
    sram = np.zeros(n_cores)
    load = np.zeros(n_cores)
    centre = D.sum(axis=0) + D.sum(axis=1)
    for _ in range(n_agents):
        agent = int(np.argmax(np.where(done, -np.inf, attach + 1e-12 * total)))
        units = problem.agent_units[agent]
        chip_ok = np.ones(n_cores, dtype=bool)
        if len(units) > 1:  # chips with room for every piece
            room = (sram + problem.unit_sram[units[0]] <= usable) & (load + problem.unit_load[units[0]] <= problem.load_cap)
            per_chip = np.bincount(f.core_chip[room], minlength=f.spec.chips)
            chip_ok = per_chip[f.core_chip] >= len(units)
        for u in units:
            cost = np.zeros(n_cores)
            for e in problem.adjacency[u]:
                s, t = problem.e_src[e], problem.e_dst[e]
                if s == u and placed[t]:
                    cost += problem.e_bytes[e] * D[:, unit_core[t]]
                elif t == u and placed[s]:
                    cost += problem.e_bytes[e] * D[unit_core[s], :]
            ok = chip_ok & (sram + problem.unit_sram[u] <= usable) & (load + problem.unit_load[u] <= problem.load_cap)
            if not ok.any():
                raise PlacementError(no_room(problem, problem.agent_names[agent]))
            if not cost.any():  # nothing placed to be near: the most central free core
                cost = centre
            c = int(np.argmin(np.where(ok, cost, np.inf)))
            unit_core[u], placed[u] = c, True
            sram[c] += problem.unit_sram[u]
            load[c] += problem.unit_load[u]
            chip_ok = f.core_chip == f.core_chip[c]
            for e in problem.adjacency[u]:
                other = problem.e_dst[e] if problem.e_src[e] == u else problem.e_src[e]
                attach[ua[other]] += problem.e_bytes[e]
        done[agent] = True
    return unit_core


def swaps(problem: Problem, unit_core: np.ndarray, passes: int = 4, deadline: float = math.inf,
          seed: int = 0) -> np.ndarray:
    """Pairwise-swap local search: move or swap each unit towards its neighbours while the
    objective falls."""
    st = _State(problem, unit_core)
    near = near_cores(problem)
    rng = random.Random(seed)
    order = np.argsort(-np.bincount(problem.e_src, weights=problem.e_bytes, minlength=problem.n_units))
    for _ in range(passes):
        improved = False
        for u in order.tolist():
            if time.perf_counter() > deadline:
                return np.array(st.core, dtype=np.int64)
            cands = {st.core[problem.e_dst[e] if problem.e_src[e] == u else problem.e_src[e]]
                     for e in problem.adjacency[u]}
            for c0 in list(cands):
                for c in [c0, *near[c0].tolist()]:
                    moves = st.propose(u, c, rng)
                    if moves is None:
                        continue
                    before = st.objective
                    hop_delta, edges = st.delta(moves)
                    if hop_delta >= 0 and not st.max_can_drop(edges):
                        continue  # the objective cannot fall
                    old = {v: st.core[v] for v in moves}
                    st.apply(moves, edges, hop_delta)
                    if st.objective < before - 1e-9 * max(1.0, before):
                        improved = True
                    else:
                        st.undo(old, edges, hop_delta)
        if not improved:
            break
    return np.array(st.core, dtype=np.int64)


def anneal(problem: Problem, start: np.ndarray | None = None, iterations: int | None = None,
           seconds: float = 10.0, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Simulated annealing over moves and swaps, started from greedy + swaps.

    Moves favour cores near a unit's neighbours; temperature falls geometrically from the
    mean uphill step to a thousandth of it.  Stops after `iterations` or `seconds`.
    """
    t_end = time.perf_counter() + seconds
    if start is None:
        start = swaps(problem, greedy(problem), deadline=time.perf_counter() + seconds * 0.4)
    st = _State(problem, start)
    rng = random.Random(seed)
    n_units = problem.n_units
    iterations = iterations or max(20_000, 300 * n_units)
    near = near_cores(problem)
    n_cores = problem.fabric.n_cores
    best, best_obj = list(st.core), st.objective

    def pick(u: int) -> int:
        adj = problem.adjacency[u]
        if adj and near.shape[1] and rng.random() < 0.85:
            e = adj[int(rng.randrange(len(adj)))]
            other = problem.e_dst[e] if problem.e_src[e] == u else problem.e_src[e]
            c = st.core[int(other)]
            return c if rng.random() < 0.2 else int(near[c, rng.randrange(near.shape[1])])
        return rng.randrange(n_cores)

    ups = []
    for _ in range(200):  # the typical uphill step sets the starting temperature
        u = rng.randrange(n_units)
        moves = st.propose(u, pick(u), rng)
        if moves:
            d, _ = st.delta(moves)
            if d > 0:
                ups.append(d)
    # Started from a good placement, annealing refines: a small uphill step (the tenth
    # percentile of those sampled) passes about one time in three at first.
    t0 = float(np.percentile(ups, 10)) if ups else 1.0
    t_min = t0 * 1e-3
    done = 0
    accepted = 0
    for done in range(1, iterations + 1):
        if done % 256 == 0 and time.perf_counter() > t_end:
            break
        temp = t0 * (t_min / t0) ** (done / iterations)
        u = rng.randrange(n_units)
        moves = st.propose(u, pick(u), rng)
        if moves is None:
            continue
        before = st.objective
        hop_delta, edges = st.delta(moves)
        # Metropolis: accept when the change d < theta = -T ln(u); drawing u first lets a move
        # whose hop-bytes alone exceed theta be refused unpriced, unless it could lower the
        # busiest link (only if one of its flows crosses that link).
        theta = -temp * math.log(1.0 - rng.random())
        if hop_delta > theta and not st.max_can_drop(edges):
            continue
        old = {v: st.core[v] for v in moves}
        st.apply(moves, edges, hop_delta)
        d = st.objective - before
        if d < theta:
            accepted += 1
            if st.objective < best_obj - 1e-9:
                best, best_obj = list(st.core), st.objective
        else:
            st.undo(old, edges, hop_delta)
    return np.array(best, dtype=np.int64), {"iterations": done, "accepted": accepted}


def exact(problem: Problem, upper: np.ndarray | None = None, max_nodes: int = 2_000_000,
          max_cores: int = 16, max_units: int = 24) -> tuple[np.ndarray, dict]:
    """Branch and bound over all placements of a small problem (the optimality reference).

    The bound is the cost of the flows already placed plus, for every flow not yet placed,
    its bytes times the least distance its two units could be apart; link loads only grow, so
    the busiest link so far bounds the final one.  On a torus every core is alike, so the first
    unit is pinned.  Returns `proven_optimal: False` when `max_nodes` ran out first.
    """
    f = problem.fabric
    if f.n_cores > max_cores or problem.n_units > max_units:
        raise PlacementError(
            f"exact search handles at most {max_cores} cores and {max_units} agent pieces "
            f"(here {f.n_cores} cores, {problem.n_units} pieces); use 'anneal'")
    if upper is None:
        upper = swaps(problem, greedy(problem))
    st = _State(problem, upper)
    best_core, best_obj = list(st.core), st.objective * (1 + 1e-9)
    n_units, n_cores = problem.n_units, f.n_cores
    D = f.distance
    order = [int(x) for x in np.argsort(-np.bincount(problem.e_src, weights=problem.e_bytes, minlength=n_units)
                                        - np.bincount(problem.e_dst, weights=problem.e_bytes, minlength=n_units))][:1]
    attach = np.zeros(n_units)
    while len(order) < n_units:
        for e in problem.adjacency[order[-1]]:
            attach[problem.e_src[e]] += problem.e_bytes[e]
            attach[problem.e_dst[e]] += problem.e_bytes[e]
        score = attach.copy()
        score[order] = -np.inf
        order.append(int(np.argmax(score)))
    pos = {u: i for i, u in enumerate(order)}
    off = D[~np.eye(n_cores, dtype=bool)].min() if n_cores > 1 else 0.0
    usable = f.spec.usable_sram_bytes
    later = np.zeros(n_units + 1)  # lower bound of flows completed at depth >= k
    edges_at: list[list[int]] = [[] for _ in range(n_units)]
    for e in range(len(problem.e_src)):
        s, t = int(problem.e_src[e]), int(problem.e_dst[e])
        k = max(pos[s], pos[t])
        edges_at[k].append(e)
        can_share = (problem.unit_sram[s] + problem.unit_sram[t] <= usable
                     and problem.unit_load[s] + problem.unit_load[t] <= problem.load_cap)
        later[k] += problem.e_bytes[e] * (0.0 if can_share else off)
    later = np.cumsum(later[::-1])[::-1]
    s = f.spec
    homogeneous = s.chips == 1 and s.core_columns == tuple(range(s.noc_cols)) and s.core_rows == tuple(range(s.noc_rows))
    core = [-1] * n_units
    sram = [0.0] * n_cores
    load = [0.0] * n_cores
    lam = problem.lam
    weights = link_weights(f).tolist()
    wl = [0.0] * f.n_resources
    routes: dict[tuple[int, int], list[tuple[int, float]]] = {}
    nodes = 0
    src, dst, nbytes = problem.e_src.tolist(), problem.e_dst.tolist(), problem.e_bytes.tolist()
    Dl = D.tolist()
    usram, uload, cap = problem.unit_sram.tolist(), problem.unit_load.tolist(), problem.load_cap * (1 + 1e-12)

    def route(a: int, b: int) -> list[tuple[int, float]]:
        hit = routes.get((a, b))
        if hit is None:
            hit = routes[(a, b)] = [(r, weights[r]) for r in f.route(a, b).resources if weights[r] > 0]
        return hit

    def visit(k: int, hop: float, cur_max: float) -> None:
        nonlocal best_core, best_obj, nodes
        if k == n_units:
            obj = hop + lam * cur_max
            if obj < best_obj:
                best_obj, best_core = obj, list(core)
            return
        u = order[k]
        cands = [0] if (k == 0 and homogeneous) else range(n_cores)
        priced = []
        for c in cands:
            if sram[c] + usram[u] > usable or load[c] + uload[u] > cap:
                continue
            inc = 0.0
            for e in edges_at[k]:
                a = c if src[e] == u else core[src[e]]
                b = c if dst[e] == u else core[dst[e]]
                inc += nbytes[e] * Dl[a][b]
            priced.append((inc, c))
        priced.sort()
        for inc, c in priced:
            nodes += 1
            if nodes > max_nodes:
                return
            h = hop + inc
            if h + later[k + 1] + lam * cur_max >= best_obj:
                break  # sorted: every later candidate is worse
            new_max = cur_max
            touched = []
            if lam > 0:
                for e in edges_at[k]:
                    a = c if src[e] == u else core[src[e]]
                    b = c if dst[e] == u else core[dst[e]]
                    if a != b:
                        x = nbytes[e]
                        for r, w in route(a, b):
                            v = wl[r] + x * w
                            wl[r] = v
                            touched.append((r, x * w))
                            if v > new_max:
                                new_max = v
            if h + later[k + 1] + lam * new_max < best_obj:
                core[u] = c
                sram[c] += usram[u]
                load[c] += uload[u]
                visit(k + 1, h, new_max)
                sram[c] -= usram[u]
                load[c] -= uload[u]
                core[u] = -1
            for r, x in touched:
                wl[r] -= x

    visit(0, 0.0, 0.0)
    return np.array(best_core, dtype=np.int64), {"nodes": nodes, "proven_optimal": nodes <= max_nodes}

"""Placement methods: feasibility, SRAM splitting and refusals, and optimality on the 4 x 4 grid."""

from __future__ import annotations

import random

import numpy as np
import pytest
from synthgrad.orchestrator import builder
from synthgrad.orchestrator.fabric.api import METHODS, place, place_problem
from synthgrad.orchestrator.fabric.costs import AgentCost, LinkCost, Workload
from synthgrad.orchestrator.fabric.errors import PlacementError, UnknownName
from synthgrad.orchestrator.fabric.fabric import Fabric
from synthgrad.orchestrator.fabric.placement import build_problem, check, evaluate


def random_workload(n: int, extra: int, seed: int) -> Workload:
    r = random.Random(seed)
    agents = [AgentCost(f"a{i}", fwd_flops=1e6, bwd_flops=2e6, param_bytes=1e5, rows=64) for i in range(n)]
    links = [LinkCost(f"a{r.randrange(i)}", f"a{i}", r.choice([1e3, 4e3, 16e3]), "dni") for i in range(1, n)]
    for _ in range(extra):
        a, b = sorted(r.sample(range(n), 2))
        links.append(LinkCost(f"a{a}", f"a{b}", r.choice([1e3, 4e3]), "dni"))
    return Workload(agents, links, batch=64)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_feasible_placement(method):
    pl = place(random_workload(9, 3, 0), "tiny_4x4", method, seconds=0.5)
    check(pl.problem, pl.unit_core)
    out = pl.as_dict()
    assert set(out["placement"]) == {f"a{i}" for i in range(9)}
    assert {"chip", "x", "y"} <= set(out["placement"]["a0"])
    assert {"hop_bytes", "max_link_load"} <= set(out["cost"])
    assert out["cost"] == evaluate(pl.problem, pl.unit_core)


def test_exact_finds_the_hand_optimum_of_a_chain(chain):
    # 8 stages on a 4 x 4 torus: every forward and every backward message can take one hop.
    w = chain(8, nbytes=1000.0, mode="dni")
    pl = place(w, "tiny_4x4", "exact")
    assert pl.notes["proven_optimal"]
    assert pl.cost["hop_bytes"] == pytest.approx(14 * 1000.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_exact_is_a_lower_bound_for_every_heuristic(seed):
    problem = build_problem(random_workload(10, 4, seed), Fabric.from_name("tiny_4x4"))
    best = place_problem(problem, "exact")
    assert best.notes["proven_optimal"]
    for method in ("row-major", "snake", "greedy", "anneal"):
        heuristic = place_problem(problem, method, seconds=0.5)
        assert heuristic.cost["objective"] >= best.cost["objective"] * (1 - 1e-9)


def test_annealing_beats_row_major_on_a_tangled_graph():
    problem = build_problem(random_workload(14, 6, 3), Fabric.from_name("tiny_4x4"))
    row = place_problem(problem, "row-major")
    sa = place_problem(problem, "anneal", seconds=1.0)
    assert sa.cost["hop_bytes"] < row.cost["hop_bytes"]


def test_an_agent_too_big_for_one_core_is_split_on_one_chip(chain):
    w = chain(3, nbytes=1000.0)
    w.agents[1].param_bytes = 3.5e6  # 1.35 MB usable per core: three cores
    for method in ("row-major", "greedy", "anneal"):
        pl = place(w, "wormhole_n300", method, seconds=0.5)
        cores = pl.cores_of("s1")
        assert len(set(cores)) == 3
        assert len({pl.fabric.coords(c)[0] for c in cores}) == 1
        assert len(pl.as_dict()["placement"]["s1"]["cores"]) == 3


def test_an_agent_bigger_than_a_chip_is_refused_by_name(chain):
    w = chain(2)
    w.agents[0].param_bytes = 30e6
    with pytest.raises(PlacementError, match="'s0'.*one chip"):
        place(w, "tiny_4x4", "anneal")


def test_more_sram_than_the_fabric_has_is_refused(chain):
    w = chain(20, sram=1.2e6)
    with pytest.raises(PlacementError, match="tiny_4x4"):
        place(w, "tiny_4x4", "row-major")


def test_unknown_method_lists_the_known_ones(chain):
    with pytest.raises(UnknownName) as err:
        place(chain(2), "tiny_4x4", "magic")
    for method in METHODS:
        assert method in str(err.value)


def test_slow_agents_share_a_core_fast_ones_do_not(chain):
    w = chain(6)
    for a in w.agents[3:]:
        a.tick_every = 4  # a quarter of the compute per step: three fit beside nothing else
    pl = place(w, "tiny_4x4", "row-major")
    fast = [pl.cores_of(f"s{i}")[0] for i in range(3)]
    slow = [pl.cores_of(f"s{i}")[0] for i in range(3, 6)]
    assert len(set(fast)) == 3
    assert len(set(slow)) < 3
    assert not set(fast) & set(slow)
    load = np.bincount(pl.unit_core, weights=pl.problem.unit_load, minlength=16)
    assert load.max() <= pl.problem.load_cap * (1 + 1e-9)


def test_tick_rates_scale_traffic(chain):
    w = chain(2, nbytes=4000.0, mode="dni")
    fast = build_problem(w, Fabric.from_name("tiny_4x4"))
    w.agents[1].tick_every = 4
    slow = build_problem(w, Fabric.from_name("tiny_4x4"))
    assert slow.e_bytes.sum() == pytest.approx(fast.e_bytes.sum() / 4)


def test_placement_respects_sram_capacity(chain):
    w = chain(12, sram=0.8e6)  # two of these never fit one 1.35 MB core
    pl = place(w, "tiny_4x4", "anneal", seconds=0.5)
    assert len(set(pl.unit_core.tolist())) == 12


def test_place_topology_and_cpu_plan_for_the_run_command(tmp_path):
    from synthgrad.orchestrator.config import load_topology
    from synthgrad.orchestrator.fabric import cpu_plan, place_topology

    doc = builder.chain(2, width=64, dataset=None, labels=False, run={"steps": 1, "batch_size": 64})
    path = builder.write(doc, tmp_path / "t.toml")
    pl = place_topology(load_topology(path), "wormhole_n150", "greedy")
    assert set(pl.as_dict()["placement"]) == {"source", "l1", "l2", "head"}
    plan = cpu_plan(pl, [4, 5])
    assert set(plan) == {"source", "l1", "l2", "head"} and set(plan.values()) <= {4, 5}
    assert len(set(plan.values())) == 2  # the work is spread over both CPUs


def test_annealing_never_ends_worse_than_its_greedy_start_after_other_fabrics():
    # Regression: search caches once keyed by id(fabric) handed a freed fabric's distances
    # to a new fabric that reused the id.
    for name in ("wormhole_t3000", "tiny_4x4", "wormhole_n150", "tiny_4x4"):
        problem = build_problem(random_workload(12, 5, 4), Fabric.from_name(name))
        greedy = place_problem(problem, "greedy", seconds=0.5)
        sa = place_problem(problem, "anneal", seconds=0.5)
        assert sa.cost["objective"] <= greedy.cost["objective"] * (1 + 1e-9)

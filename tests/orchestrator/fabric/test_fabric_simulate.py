"""The simulator against closed forms on uniform chains, and its contention and trace outputs."""

from __future__ import annotations

import numpy as np
import pytest
from synthgrad.orchestrator.fabric.api import place
from synthgrad.orchestrator.fabric.costs import AgentCost, LinkCost, Workload
from synthgrad.orchestrator.fabric.errors import UnknownName
from synthgrad.orchestrator.fabric.fabric import Fabric
from synthgrad.orchestrator.fabric.placement import Placement, build_problem, compute_seconds
from synthgrad.orchestrator.fabric.simulate import SimulationError, simulate

K = 4


def t_f(fabric: Fabric) -> float:
    return compute_seconds(fabric, 1e9, 64)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("M", [1, 4, 8])
def test_locked_pipeline_matches_the_gpipe_closed_form(chain, schedule, M):
    pl = place(chain(K), "wormhole_n150", "snake")
    r = simulate(pl, "backprop", M, schedule, steps=6)
    tf = t_f(pl.fabric)
    assert r.step_time_s == pytest.approx((M + K - 1) * 3 * tf, rel=1e-3)
    bubble = (K - 1) / (M + K - 1)
    assert r.core_utilisation == pytest.approx(1 - bubble, rel=1e-3)


# Slowest stage per step, in forward times of a normal stage: DNI F + B = 2 + 4; unlocked adds
# the real forward after the synthetic step (agents/runtime/synthetic_input.py): 2 + 4 + 2.
@pytest.mark.parametrize(("mode", "period"), [("dni", 6), ("unlocked", 8)])
@pytest.mark.parametrize("M", [1, 8])
def test_decoupled_steady_state_is_set_by_the_slowest_stage(chain, mode, period, M):
    w = chain(6, slow=2).with_mode(mode)
    pl = place(w, "wormhole_n150", "snake")
    r = simulate(pl, mode, M, steps=16)
    assert r.step_time_s == pytest.approx(M * period * t_f(pl.fabric), rel=1e-3)
    assert r.samples_per_s == pytest.approx(64 * M / r.step_time_s)


def test_dni_beats_locked_backprop_on_a_long_chain(chain):
    pl = place(chain(8, nbytes=64e3), "wormhole_n150", "anneal", seconds=0.5)
    locked = simulate(pl, "backprop", 1, steps=6)
    dni = simulate(pl, "dni", 1, steps=12)
    assert dni.samples_per_s / locked.samples_per_s == pytest.approx(8, rel=0.05)


def manual(workload: Workload, fabric: str, cores: list[tuple[int, int]]) -> Placement:
    f = Fabric.from_name(fabric)
    problem = build_problem(workload, f)
    unit_core = np.array([f.core_of(0, x, y) for x, y in cores])
    return Placement(problem, unit_core, "manual")


def fan_out(n_dst: int, nbytes: float) -> Workload:
    agents = [AgentCost("src", fwd_flops=1e6, rows=64)] + [
        AgentCost(f"d{i}", fwd_flops=1e6, bwd_flops=2e6, param_bytes=1e5, rows=64) for i in range(n_dst)]
    links = [LinkCost("src", f"d{i}", nbytes, "none") for i in range(n_dst)]
    return Workload(agents, links, batch=64)


def message_times(result) -> list[float]:
    return [e["dur"] * 1e-6 for e in result.trace if e.get("cat") == "message" and e["name"] == "act 0"]


def test_an_isolated_message_takes_latency_plus_bytes_over_rate():
    nbytes = 256e3
    pl = manual(fan_out(1, nbytes), "tiny_4x4", [(0, 0), (1, 0)])
    r = simulate(pl, "dni", steps=1, trace=True)
    s = pl.fabric.spec
    rate = min(s.niu_bytes_per_s, s.link_bytes_per_s)
    assert message_times(r) == [pytest.approx(s.message_overhead_s + s.hop_latency_s + nbytes / rate)]


def test_two_messages_sharing_a_link_each_get_half_of_it():
    nbytes = 256e3
    # src -> (1,0) and src -> (2,0) both leave through src's NoC0 port and link (0,0)+x.
    pl = manual(fan_out(2, nbytes), "tiny_4x4", [(0, 0), (1, 0), (2, 0)])
    r = simulate(pl, "dni", steps=1, trace=True)
    s = pl.fabric.spec
    half = min(s.niu_bytes_per_s, s.link_bytes_per_s) / 2
    times = sorted(message_times(r))
    assert times[0] == pytest.approx(s.message_overhead_s + s.hop_latency_s + nbytes / half, rel=1e-6)
    assert times[1] == pytest.approx(s.message_overhead_s + 2 * s.hop_latency_s + nbytes / half, rel=1e-6)
    assert r.links[0]["utilisation"] > 0


def test_ethernet_dominates_a_chip_crossing():
    nbytes = 256e3
    w = fan_out(1, nbytes)
    f = Fabric.from_name("wormhole_n300")
    pl = Placement(build_problem(w, f), np.array([f.core_of(0, 9, 5), f.core_of(1, 1, 5)]), "manual")
    r = simulate(pl, "dni", steps=1, trace=True)
    assert message_times(r)[0] > nbytes / f.spec.eth_bytes_per_s


def test_a_slow_ticking_agent_acts_on_every_tth_step(chain):
    w = chain(3, nbytes=1e3, mode="dni")
    w.agents[2].tick_every = 4
    pl = place(w, "tiny_4x4", "row-major")
    r = simulate(pl, "dni", 1, steps=8, trace=True)
    ops = [e["name"] for e in r.trace if e.get("cat") == "compute" and e["tid"] == 2]
    assert sorted(int(n.split()[1]) for n in ops if n.startswith("F")) == [0, 4]


def test_trace_is_a_chrome_trace(chain):
    pl = place(chain(3, nbytes=1e3), "tiny_4x4", "row-major")
    r = simulate(pl, "backprop", 2, steps=2, trace=True)
    phases = {e["ph"] for e in r.trace}
    assert phases == {"M", "X"}
    assert all({"ts", "dur", "pid", "tid", "name"} <= set(e) for e in r.trace if e["ph"] == "X")
    assert r.critical_path["segments"]


def test_critical_path_of_a_locked_chain_walks_through_every_stage(chain):
    pl = place(chain(4, nbytes=1e3), "tiny_4x4", "row-major")
    r = simulate(pl, "backprop", 1, steps=3)
    who = {seg["who"] for seg in r.critical_path["segments"] if not seg["what"].startswith("msg")}
    assert who == {"s0", "s1", "s2", "s3"}
    assert r.critical_path["compute_s"] > 0 and r.critical_path["communication_s"] > 0


def test_a_cycle_of_links_is_reported_not_hung(chain):
    w = chain(2, nbytes=1e3, mode="dni")
    w.links.append(LinkCost("s1", "s0", 1e3, "dni"))
    pl = place(w, "tiny_4x4", "row-major")
    with pytest.raises(SimulationError, match="waiting"):
        simulate(pl, "dni", steps=2)


def test_unknown_mode_and_schedule_are_named(chain):
    pl = place(chain(2), "tiny_4x4", "row-major")
    with pytest.raises(UnknownName, match="backprop"):
        simulate(pl, "sideways")
    with pytest.raises(UnknownName, match="1f1b"):
        simulate(pl, "backprop", 2, "zigzag")

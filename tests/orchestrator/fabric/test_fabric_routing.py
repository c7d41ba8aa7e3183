"""Routes and hop counts checked by hand on the 4 x 4 torus, and across chips."""

from __future__ import annotations

import numpy as np
import pytest
from synthgrad.orchestrator.fabric.fabric import Fabric


@pytest.fixture(scope="module")
def tiny() -> Fabric:
    return Fabric.from_name("tiny_4x4")


def names(fabric: Fabric, a: tuple[int, int], b: tuple[int, int]) -> list[str]:
    route = fabric.route(fabric.core_of(0, *a), fabric.core_of(0, *b))
    return [fabric.describe_resource(r) for r in route.resources]


def test_one_hop_right_rides_noc0(tiny):
    assert names(tiny, (0, 0), (1, 0)) == [
        "chip0 noc0 niu-inject (0,0)", "chip0 noc0 (0,0)+x", "chip0 noc0 niu-absorb (1,0)"]


def test_one_hop_left_rides_noc1_not_the_wraparound(tiny):
    # NoC0 would go right 3 hops around the torus; NoC1 goes left 1 hop.
    assert names(tiny, (1, 0), (0, 0)) == [
        "chip0 noc1 niu-inject (1,0)", "chip0 noc1 (1,0)-x", "chip0 noc1 niu-absorb (0,0)"]


def test_noc0_goes_x_first_then_y(tiny):
    links = [n for n in names(tiny, (0, 0), (2, 1)) if "niu" not in n]
    assert links == ["chip0 noc0 (0,0)+x", "chip0 noc0 (1,0)+x", "chip0 noc0 (2,0)+y"]


def test_noc1_goes_y_first_then_x_and_wraps(tiny):
    # (0,0) -> (3,3): NoC0 needs 3 + 3 hops, NoC1 wraps once in y and once in x.
    links = [n for n in names(tiny, (0, 0), (3, 3)) if "niu" not in n]
    assert links == ["chip0 noc1 (0,0)-y", "chip0 noc1 (0,3)-x"]


def test_a_tie_takes_noc0(tiny):
    assert all("noc0" in n for n in names(tiny, (0, 0), (2, 2)))


def test_hop_matrix_matches_hand_counts_and_routes(tiny):
    hops = tiny.hops
    c = tiny.core_of
    assert hops[c(0, 0, 0), c(0, 1, 0)] == 1
    assert hops[c(0, 1, 0), c(0, 0, 0)] == 1
    assert hops[c(0, 0, 0), c(0, 2, 2)] == 4
    assert hops[c(0, 0, 0), c(0, 3, 3)] == 2
    assert hops[c(0, 1, 1), c(0, 1, 1)] == 0
    for a in range(tiny.n_cores):
        for b in range(tiny.n_cores):
            assert hops[a, b] == tiny.route(a, b).noc_hops


def test_hops_use_physical_coordinates_across_the_dram_column():
    n150 = Fabric.from_name("wormhole_n150")
    # Cores at x = 4 and x = 6 are neighbours in the compute grid but DRAM column 5 lies between.
    assert n150.hops[n150.core_of(0, 4, 1), n150.core_of(0, 6, 1)] == 2
    assert n150.hops[n150.core_of(0, 3, 1), n150.core_of(0, 4, 1)] == 1


def test_latency_counts_startup_and_hops(tiny):
    route = tiny.route(tiny.core_of(0, 0, 0), tiny.core_of(0, 2, 1))
    s = tiny.spec
    assert route.latency_s == pytest.approx(s.message_overhead_s + 3 * s.hop_latency_s)


def test_chip_to_chip_traffic_crosses_ethernet():
    n300 = Fabric.from_name("wormhole_n300")
    a, b = n300.core_of(0, 1, 1), n300.core_of(1, 1, 1)
    route = n300.route(a, b)
    eth = [r for r in route.resources if n300.is_eth(r)]
    assert len(eth) == 1 and route.eth_hops == 1
    assert "eth chip0->east" in n300.describe_resource(eth[0])
    assert route.capacity == pytest.approx(n300.spec.eth_bytes_per_s)
    assert route.latency_s > n300.spec.eth_hop_latency_s
    assert n300.hops[a, b] == route.noc_hops + 1


def test_multi_chip_hop_matrix_agrees_with_routes():
    t3000 = Fabric.from_name("wormhole_t3000")
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, t3000.n_cores, size=(300, 2)):
        route = t3000.route(int(a), int(b))
        assert t3000.hops[a, b] == route.noc_hops + route.eth_hops
    corner = t3000.route(0, t3000.n_cores - 1)  # chip (0,0) -> chip (1,3): 3 east + 1 south
    assert corner.eth_hops == 4

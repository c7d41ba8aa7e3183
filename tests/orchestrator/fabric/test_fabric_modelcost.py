"""FLOPs counted from real modules, and a topology turned into costs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from synthgrad.orchestrator import builder as topologies  # the tests below define `builder`
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.fabric.costs import chain_workload, sram_bytes, step_flops
from synthgrad.orchestrator.fabric.modelcost import (
    costs_from_topology,
    count_flops,
    stand_in_builder,
)
from torch import nn

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_linear_flops_are_two_per_multiply_add_plus_bias():
    c = count_flops(nn.Linear(100, 10), (100,), batch=32)
    assert c.forward == 32 * (2 * 100 * 10 + 10)
    assert c.backward == 2 * c.forward
    assert c.params == 100 * 10 + 10
    assert c.out_shape == (10,)


def test_conv_flops_follow_the_output_size():
    c = count_flops(nn.Conv2d(3, 8, 3, padding=1, bias=False), (3, 16, 16), batch=4)
    assert c.forward == 4 * 8 * 16 * 16 * 2 * 3 * 3 * 3


def test_batchnorm_and_activations_are_elementwise():
    m = nn.Sequential(nn.BatchNorm1d(64), nn.ReLU(), nn.Tanh())
    c = count_flops(m, (64,), batch=10)
    assert c.forward == 10 * 64 * (5 + 1 + 4)
    assert c.activations == 10 * 64 * 4  # the input and three outputs


def test_lstm_cell_and_lstm_cost_four_gates():
    h, i, b = 32, 16, 8
    per_step = 2 * 4 * h * (i + h) + 2 * 4 * h + 8 * 4 * h
    assert count_flops(nn.LSTMCell(i, h), (i,), batch=b).forward == b * per_step
    seq = count_flops(nn.LSTM(i, h, batch_first=True), (5, i), batch=b)
    assert seq.forward == b * 5 * per_step


def test_unknown_leaves_are_named_not_ignored():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(7, 7))

        def forward(self, x):
            return x @ self.w

    c = count_flops(nn.Sequential(Odd()), (7,), batch=2)
    assert c.unknown == ("Odd",)
    assert c.forward == 2 * 49 * 2


def test_the_analytic_chain_equals_the_costed_topology_file():
    costed = costs_from_topology(load_topology(EXAMPLES / "chain64.toml"))
    analytic = chain_workload(64)
    assert [a.name for a in costed.agents] == [a.name for a in analytic.agents]
    for a, b in zip(costed.agents, analytic.agents, strict=True):
        for field in ("fwd_flops", "bwd_flops", "update_flops", "param_bytes", "cache_bytes"):
            assert getattr(a, field) == pytest.approx(getattr(b, field)), (a.name, field)
    for a, b in zip(costed.links, analytic.links, strict=True):
        assert (a.bytes, a.mode) == (b.bytes, b.mode)
        assert a.sg_train_flops == pytest.approx(b.sg_train_flops)


def test_two_timescale_costs_count_the_slow_core_a_quarter_as_often():
    w = costs_from_topology(load_topology(EXAMPLES / "two_timescale_fabric.toml"), module_builder=_builder)
    per_step = step_flops(w)
    core_a, core_b = w.agents[w.index["core_a"]], w.agents[w.index["core_b"]]
    assert core_b.tick_every == 4
    assert core_a.fwd_flops == pytest.approx(core_b.fwd_flops)
    # core_a also trains the SG model of its message to B, so it costs more than 4x B.
    assert per_step["core_b"] < per_step["core_a"] / 4
    message = next(lk for lk in w.links if (lk.src, lk.dst) == ("core_a", "core_b"))
    assert w.every(message) == 4
    assert message.sg_bytes > next(lk for lk in w.links if lk.dst == "head_a").sg_bytes  # MLP SG
    assert sram_bytes(w)["core_a"] > 1_350_000  # an LSTM of 256 needs several cores


def _builder(kind: str, params: dict, in_shape: tuple[int, ...]):
    """The runtime's builder where it knows the kind, else the fabric model's stand-in."""
    from synthgrad.agents.kinds.modules import build_module

    try:
        return build_module(kind, params, in_shape)
    except ValueError:
        return stand_in_builder(kind, params, in_shape)


def test_links_out_of_the_source_and_labels_carry_no_gradient():
    w = costs_from_topology(load_topology(EXAMPLES / "chain64.toml"))
    first = w.links[0]
    labels = w.links[-1]
    assert (first.src, first.mode, first.bytes) == ("source", "none", 256 * 784 * 2)
    assert (labels.dst, labels.mode, labels.bytes) == ("head", "none", 256 * 8)


def test_a_stand_in_builder_can_be_injected(tmp_path):
    calls = []

    def builder(kind, params, in_shape):
        calls.append(kind)
        return nn.Sequential(nn.Linear(math.prod(in_shape), 8)), (8,)

    agents = {"source": topologies.agent("source"), "a": topologies.agent("anything")}
    doc = topologies.topology(agents, [("source.x", "a")], run={"steps": 1, "batch_size": 16})
    path = topologies.write(doc, tmp_path / "t.toml")
    w = costs_from_topology(load_topology(path), module_builder=builder)
    assert calls == ["anything"]
    assert w.agents[1].fwd_flops == 16 * (2 * 784 * 8 + 8)


def test_a_cycle_is_refused_by_name(tmp_path):
    agents = {name: topologies.agent("dense", width=4) for name in ("a", "b")}
    doc = topologies.topology(agents, [("a", "b"), ("b", "a")], run={"steps": 1})
    path = topologies.write(doc, tmp_path / "t.toml")
    with pytest.raises(ValueError, match="cycle through a, b"):
        costs_from_topology(load_topology(path))

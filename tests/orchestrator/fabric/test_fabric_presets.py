"""Fabric presets and user fabric files: figures from the reference, refusals that name the field."""

from __future__ import annotations

import pytest
from synthgrad.orchestrator.fabric.errors import FabricError, UnknownName
from synthgrad.orchestrator.fabric.fabric import Fabric
from synthgrad.orchestrator.fabric.presets import PRESETS, load_spec, preset_names


def test_every_preset_loads_with_its_core_count():
    counts = {"wormhole_n150": 64, "wormhole_n300": 128, "wormhole_t3000": 512,
              "wormhole_galaxy": 2048, "blackhole_p150": 110, "tiny_4x4": 16}
    assert set(counts) == set(preset_names())
    for name, cores in counts.items():
        assert Fabric.from_name(name).n_cores == cores


def test_wormhole_figures_follow_the_reference():
    s = load_spec("wormhole_n150")
    assert (s.noc_cols, s.noc_rows) == (10, 12)
    assert s.sram_bytes == 1_499_136
    assert s.link_bytes_per_s == pytest.approx(30e9)
    assert s.hop_latency_s == pytest.approx(10e-9)
    assert s.core_flops_per_s == pytest.approx(1024e9)  # HiFi4 at 1 GHz
    assert 5 not in s.core_columns and 6 not in s.core_rows  # DRAM column, Ethernet row
    assert s.eth_bytes_per_s == pytest.approx(12.5e9 * 0.96)


def test_blackhole_is_faster_and_wider():
    wh, bh = load_spec("wormhole_n150"), load_spec("blackhole_p150")
    assert bh.clock_hz == pytest.approx(1.35e9)
    assert bh.link_bytes_per_s > 2 * wh.link_bytes_per_s
    assert (bh.noc_cols, bh.noc_rows) == (17, 12)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UnknownName) as err:
        load_spec("wormhole_n9000")
    for name in PRESETS:
        assert name in str(err.value)


def test_user_fabric_file_inherits_and_overrides(tmp_path):
    path = tmp_path / "ring.toml"
    path.write_text('name = "wh_line4"\ninherits = "wormhole_n150"\nchip_mesh = [1, 4]\n'
                    "[ethernet]\nlinks_per_neighbour = 2\n")
    fabric = Fabric.from_name(str(path))
    assert fabric.name == "wh_line4"
    assert fabric.spec.chips == 4
    assert fabric.n_cores == 4 * 64


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('inherits = "tiny_4x4"\n[noc]\ncols = 0\n', "noc.cols"),
        ('inherits = "tiny_4x4"\n[cores]\nusable_sram_bytes = 2000000\n', "cores.usable_sram_bytes"),
        ('inherits = "tiny_4x4"\n[cores]\ncolumns = [0, 1, 9]\n', "cores.columns"),
        ('inherits = "tiny_4x4"\n[cores]\nefficiency = 1.5\n', "cores.efficiency"),
        ('inherits = "tiny_4x4"\n[cores]\nfidelity = "hifi9"\n', "cores.fidelity"),
        ('inherits = "tiny_4x4"\n[noc]\nlink_bytes_per_cycle = -30\n', "noc.link_bytes_per_cycle"),
        ('inherits = "tiny_4x4"\nchip_mesh = [2, 2]\n', "ethernet.gateways.east"),
        ('inherits = "wormhole_n150"\n[ethernet.gateways]\neast = [[3, 3]]\n', "ethernet.gateways.east"),
        ('clock_ghz = 1.0\n', "chip_mesh"),
    ],
)
def test_impossible_figures_are_refused_naming_the_field(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FabricError) as err:
        load_spec(str(path))
    assert err.value.field == field
    assert str(err.value).startswith(field)

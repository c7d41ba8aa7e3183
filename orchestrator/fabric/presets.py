"""Fabric descriptions: the built-in presets, user TOML files, and their validation.

A fabric is described as plain nested tables (the same shape in Python and in TOML) and
validated into a frozen `FabricSpec`.  Every figure comes from the public sources docs/fabric.md
lists; the ones marked `assumption` there are marked so here.  Grid coordinates are *physical* NoC
coordinates (x = column, y = row): DRAM and Ethernet tiles sit inside the grid and traffic
crosses them, so hop counts must use these, not the compacted core coordinates.

A user fabric file is a TOML document with the keys of `WORMHOLE_CHIP` below; `inherits =
"PRESET"` starts from a preset and overrides what the file gives::

    name = "wormhole_ring4"
    inherits = "wormhole_n150"
    chip_mesh = [1, 4]
    [ethernet]
    links_per_neighbour = 2
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FabricError, UnknownName

FIDELITY_FLOPS_PER_CYCLE = {"lofi": 4096, "hifi2": 2048, "hifi3": 1365, "hifi4": 1024}  # TR-GEMM
DIRECTIONS = ("east", "west", "south", "north")  # chip-mesh directions: +col, -col, +row, -row

# One Wormhole B0 chip (ISA, tt-npe wormhole_b0.hpp, SPEC-WH).  DRAM tiles fill NoC columns 0
# and 5, Ethernet tiles rows 0 and 6; Tensix rows 1-5 and 7-11.  tt-metal gives user kernels
# an 8 x 8 compute grid: rows 10 and 11 stand for the harvested / dispatch rows (harvesting
# varies per chip; which rows is an assumption).
WORMHOLE_CHIP: dict[str, Any] = {
    "description": "Wormhole n150: one chip, 8 x 8 compute cores on a 10 x 12 NoC torus",
    "clock_ghz": 1.0,
    "chip_mesh": [1, 1],
    "noc": {
        "cols": 10,
        "rows": 12,
        "link_bytes_per_cycle": 30.0,  # tt-npe (32 B flit, 30 effective)
        "hop_latency_cycles": 10.0,  # tt-npe write latency 40 + 10 x hops (ISA: 9)
        "niu_bytes_per_cycle": 28.1,  # tt-npe worker NIU inject / absorb
        "message_overhead_cycles": 40.0,  # tt-npe startup latency
        "max_packet_bytes": 8192,  # ISA: 256 data flits of 32 B
        "size_bandwidth": [[128, 5.5], [256, 10.1], [512, 18.0], [1024, 27.4], [2048, 30.0]],
    },
    "cores": {
        "columns": [1, 2, 3, 4, 6, 7, 8, 9],
        "rows": [1, 2, 3, 4, 5, 7, 8, 9],
        "sram_bytes": 1_499_136,  # 1464 KiB of L1
        "usable_sram_bytes": 1_350_000,  # assumption: ~10 % kept for firmware and buffers
        "fidelity": "hifi4",  # bf16 pairs with HiFi4 (TR-GEMM)
        "efficiency": 0.7,  # assumption: measured 0.4-0.93
        "skinny_rows": 8,  # the matrix unit's 8-row face: fewer rows waste it
    },
    "ethernet": {
        "link_gbytes_per_s": 12.5,  # 100 GbE, one direction (TR-ETH)
        "payload_efficiency": 0.96,  # TT-Fabric headers (TR-ETH, TR-CCL)
        "hop_latency_us": 0.711,  # TR-CCL, 1-D fabric, per chip-to-chip hop
        "links_per_neighbour": 1,
        # Which Ethernet tile faces which neighbour is not public: assumption, spread by side
        # over the 16 tiles of rows 0 and 6.
        "gateways": {
            "east": [[9, 0], [9, 6], [8, 0], [8, 6]],
            "west": [[1, 0], [1, 6], [2, 0], [2, 6]],
            "north": [[3, 0], [4, 0], [6, 0], [7, 0]],
            "south": [[3, 6], [4, 6], [6, 6], [7, 6]],
        },
    },
}

BLACKHOLE_CHIP: dict[str, Any] = {
    "description": "Blackhole p150: one chip, 11 x 10 compute cores on a 17 x 12 NoC torus",
    "clock_ghz": 1.35,
    "chip_mesh": [1, 1],
    "noc": {
        "cols": 17,
        "rows": 12,
        "link_bytes_per_cycle": 60.9,  # tt-npe blackhole.hpp (64 B flit)
        "hop_latency_cycles": 11.0,
        "niu_bytes_per_cycle": 60.9,
        "message_overhead_cycles": 40.0,
        "max_packet_bytes": 16384,
        "size_bandwidth": [
            [128, 6.0], [256, 12.1], [512, 24.2], [1024, 48.0],
            [2048, 57.7], [4096, 58.7], [8192, 60.4], [16384, 60.9],
        ],
    },
    "cores": {
        # DRAM columns 0 and 9, router-only column 8, Ethernet row 1, row 0 ARC/PCIe.  Firmware
        # >= v19.5.0 enables 120 Tensix and tt-metal keeps one column for dispatch: 11 x 10.
        "columns": [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13],
        "rows": [2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        "sram_bytes": 1_499_136,
        "usable_sram_bytes": 1_350_000,  # assumption
        "fidelity": "hifi4",
        "efficiency": 0.7,
        "skinny_rows": 8,
    },
    "ethernet": {
        "link_gbytes_per_s": 50.0,  # rated; TR-CCL measured links running at half of it
        "payload_efficiency": 0.96,
        "hop_latency_us": 0.515,
        "links_per_neighbour": 2,
        "gateways": {  # assumption, spread over Ethernet row 1
            "east": [[16, 1], [15, 1], [14, 1]],
            "west": [[1, 1], [2, 1], [3, 1]],
            "north": [[4, 1], [5, 1], [6, 1]],
            "south": [[10, 1], [11, 1], [12, 1]],
        },
    },
}


def _deep_update(base: dict, changes: dict, where: str = "") -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "gateways":
            _deep_update(base[key], value, f"{where}{key}.")
        else:
            base[key] = copy.deepcopy(value)


def _derive(base: dict, **changes: Any) -> dict:
    out = copy.deepcopy(base)
    _deep_update(out, changes)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    "tiny_4x4": _derive(
        WORMHOLE_CHIP,
        description="Synthetic 4 x 4 torus of Wormhole-like cores, for tests and exact search",
        noc={"cols": 4, "rows": 4},
        cores={"columns": [0, 1, 2, 3], "rows": [0, 1, 2, 3]},
        ethernet={"gateways": {}},
    ),
    "wormhole_n150": _derive(WORMHOLE_CHIP),
    "wormhole_n300": _derive(
        WORMHOLE_CHIP,
        description="Wormhole n300: two chips on one board, one usable Ethernet link between",
        chip_mesh=[1, 2],
        ethernet={"links_per_neighbour": 1},  # 2 links, 1 reserved for dispatch (TR-ETH)
    ),
    "wormhole_t3000": _derive(
        WORMHOLE_CHIP,
        description="8 Wormhole chips as a 2 x 4 mesh (T3000), 2 links per neighbour (assumption)",
        chip_mesh=[2, 4],
        ethernet={"links_per_neighbour": 2},
    ),
    "wormhole_galaxy": _derive(
        WORMHOLE_CHIP,
        description="32 Wormhole chips as a 4 x 8 mesh (Galaxy), 4 links per neighbour",
        chip_mesh=[4, 8],
        ethernet={"links_per_neighbour": 4},  # 16 Ethernet cores over 4 neighbours
    ),
    "blackhole_p150": _derive(BLACKHOLE_CHIP),
}


@dataclass(frozen=True)
class FabricSpec:
    """A validated fabric: one chip's grid, repeated over a mesh of chips.

    Rates are in bytes per second and FLOP per second; times in seconds.
    """

    name: str
    description: str
    clock_hz: float
    chip_rows: int
    chip_cols: int
    noc_cols: int
    noc_rows: int
    link_bytes_per_s: float
    hop_latency_s: float
    niu_bytes_per_s: float
    message_overhead_s: float
    max_packet_bytes: int
    size_bandwidth: tuple[tuple[int, float], ...]  # (packet bytes, bytes per cycle)
    core_columns: tuple[int, ...]
    core_rows: tuple[int, ...]
    sram_bytes: int
    usable_sram_bytes: int
    core_flops_per_s: float  # peak at the chosen fidelity, before `efficiency`
    efficiency: float
    skinny_rows: int
    eth_bytes_per_s: float  # one link, one direction, payload
    eth_hop_latency_s: float
    eth_links_per_neighbour: int
    gateways: dict[str, tuple[tuple[int, int], ...]]

    @property
    def chips(self) -> int:
        return self.chip_rows * self.chip_cols

    @property
    def cores_per_chip(self) -> int:
        return len(self.core_columns) * len(self.core_rows)


def preset_names() -> list[str]:
    """The presets, smallest first."""
    return list(PRESETS)


def load_spec(name_or_path: str | Path) -> FabricSpec:
    """A preset by name, or a user fabric from a `.toml` file.

    Raises:
        UnknownName: neither a preset nor an existing file (lists the presets).
        FabricError: the description has an impossible figure (names the field).
    """
    text = str(name_or_path)
    if text in PRESETS:
        return spec_from_dict(PRESETS[text], text)
    path = Path(text)
    if path.suffix == ".toml" and path.is_file():
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise FabricError("", f"{path}: not valid TOML: {err}") from None
        return spec_from_dict(doc, path.stem)
    raise UnknownName("fabric preset (or .toml file)", text, preset_names())


def spec_from_dict(doc: dict, default_name: str = "fabric") -> FabricSpec:
    """Validate a fabric description (see `WORMHOLE_CHIP` for the keys)."""
    doc = copy.deepcopy(doc)
    name = doc.pop("name", default_name)
    parent = doc.pop("inherits", None)
    if parent is not None:
        if parent not in PRESETS:
            raise FabricError("inherits", str(UnknownName("preset", parent, preset_names())))
        base = copy.deepcopy(PRESETS[parent])
        _deep_update(base, doc, where="")
        doc = base
    v = _Validator(doc)
    clock_hz = v.number("clock_ghz", lo=0.0) * 1e9
    mesh = v.int_list("chip_mesh", length=2, lo=1)
    cols, rows = v.int("noc.cols", lo=1), v.int("noc.rows", lo=1)
    cyc = 1.0 / clock_hz
    table = v.get("noc.size_bandwidth")
    if not isinstance(table, list) or not table or any(
        not isinstance(r, list) or len(r) != 2 or not all(_is_num(x) and x > 0 for x in r) for r in table
    ):
        raise FabricError("noc.size_bandwidth", "must be a non-empty list of [bytes, bytes_per_cycle] pairs, all positive")
    if any(a[0] >= b[0] for a, b in zip(table, table[1:], strict=False)):
        raise FabricError("noc.size_bandwidth", "packet sizes must increase")
    core_cols = v.int_list("cores.columns", lo=0, hi=cols - 1, unique=True)
    core_rows = v.int_list("cores.rows", lo=0, hi=rows - 1, unique=True)
    sram = v.int("cores.sram_bytes", lo=1)
    usable = v.int("cores.usable_sram_bytes", lo=1)
    if usable > sram:
        raise FabricError("cores.usable_sram_bytes", f"{usable} exceeds cores.sram_bytes = {sram}")
    fidelity = v.get("cores.fidelity")
    if fidelity not in FIDELITY_FLOPS_PER_CYCLE:
        raise FabricError("cores.fidelity", str(UnknownName("fidelity", str(fidelity), list(FIDELITY_FLOPS_PER_CYCLE))))
    efficiency = v.number("cores.efficiency", lo=0.0, hi=1.0)
    links = v.int("ethernet.links_per_neighbour", lo=1)
    gateways = _gateways(v, mesh, links, cols, rows, set(core_cols), set(core_rows))
    return FabricSpec(
        name=str(name),
        description=str(doc.get("description", "")),
        clock_hz=clock_hz,
        chip_rows=mesh[0],
        chip_cols=mesh[1],
        noc_cols=cols,
        noc_rows=rows,
        link_bytes_per_s=v.number("noc.link_bytes_per_cycle", lo=0.0) * clock_hz,
        hop_latency_s=v.number("noc.hop_latency_cycles", lo=0.0, open_lo=False) * cyc,
        niu_bytes_per_s=v.number("noc.niu_bytes_per_cycle", lo=0.0) * clock_hz,
        message_overhead_s=v.number("noc.message_overhead_cycles", lo=0.0, open_lo=False) * cyc,
        max_packet_bytes=v.int("noc.max_packet_bytes", lo=1),
        size_bandwidth=tuple((int(a), float(b)) for a, b in table),
        core_columns=tuple(core_cols),
        core_rows=tuple(core_rows),
        sram_bytes=sram,
        usable_sram_bytes=usable,
        core_flops_per_s=FIDELITY_FLOPS_PER_CYCLE[fidelity] * clock_hz,
        efficiency=efficiency,
        skinny_rows=v.int("cores.skinny_rows", lo=1),
        eth_bytes_per_s=v.number("ethernet.link_gbytes_per_s", lo=0.0) * 1e9
        * v.number("ethernet.payload_efficiency", lo=0.0, hi=1.0),
        eth_hop_latency_s=v.number("ethernet.hop_latency_us", lo=0.0, open_lo=False) * 1e-6,
        eth_links_per_neighbour=links,
        gateways=gateways,
    )


def _gateways(v: _Validator, mesh: list[int], links: int, cols: int, rows: int,
              core_cols: set[int], core_rows: set[int]) -> dict[str, tuple[tuple[int, int], ...]]:
    raw = v.get("ethernet.gateways")
    if not isinstance(raw, dict):
        raise FabricError("ethernet.gateways", "must be a table of direction = [[x, y], ...]")
    needed = ([] if mesh[1] == 1 else ["east", "west"]) + ([] if mesh[0] == 1 else ["south", "north"])
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for direction, tiles in raw.items():
        where = f"ethernet.gateways.{direction}"
        if direction not in DIRECTIONS:
            raise FabricError(where, f"unknown direction; known: {', '.join(DIRECTIONS)}")
        if not isinstance(tiles, list) or any(
            not isinstance(t, list) or len(t) != 2 or not all(isinstance(c, int) for c in t) for t in tiles
        ):
            raise FabricError(where, "must be a list of [x, y] tile coordinates")
        for x, y in tiles:
            if not (0 <= x < cols and 0 <= y < rows):
                raise FabricError(where, f"tile [{x}, {y}] lies outside the {cols} x {rows} NoC grid")
            if x in core_cols and y in core_rows:
                raise FabricError(where, f"tile [{x}, {y}] is a compute core, not an Ethernet tile")
        out[direction] = tuple((x, y) for x, y in tiles[:links])
    for direction in needed:
        if len(out.get(direction, ())) < links:
            raise FabricError(
                f"ethernet.gateways.{direction}",
                f"a {mesh[0]} x {mesh[1]} chip mesh needs {links} Ethernet tile(s) facing {direction} "
                f"(ethernet.links_per_neighbour), got {len(out.get(direction, ()))}",
            )
    return out


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


class _Validator:
    """Looks up dotted keys and checks figures, naming the field in every error."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc

    def get(self, key: str) -> Any:
        node: Any = self.doc
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise FabricError(key, "is required")
            node = node[part]
        return node

    def number(self, key: str, lo: float, hi: float | None = None, open_lo: bool = True) -> float:
        value = self.get(key)
        bad = not _is_num(value) or (value <= lo if open_lo else value < lo) or (hi is not None and value > hi)
        if bad:
            rng = f"{'>' if open_lo else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            raise FabricError(key, f"must be a number {rng}, got {value!r}")
        return float(value)

    def int(self, key: str, lo: int) -> int:
        value = self.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise FabricError(key, f"must be an integer >= {lo}, got {value!r}")
        return value

    def int_list(self, key: str, lo: int, hi: int | None = None, length: int | None = None,
                 unique: bool = False) -> list[int]:
        value = self.get(key)
        if not isinstance(value, list) or not value or any(
            not isinstance(x, int) or isinstance(x, bool) for x in value
        ):
            raise FabricError(key, f"must be a non-empty list of integers, got {value!r}")
        if length is not None and len(value) != length:
            raise FabricError(key, f"must have {length} entries, got {len(value)}")
        for x in value:
            if x < lo or (hi is not None and x > hi):
                raise FabricError(key, f"entry {x} is outside {lo}..{hi if hi is not None else 'inf'}")
        if unique and len(set(value)) != len(value):
            raise FabricError(key, "entries must not repeat")
        return list(value)

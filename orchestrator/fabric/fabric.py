"""The modelled fabric: cores, routes and the resources that messages share.

Inside a chip, two unidirectional NoC tori carry traffic: NoC0 goes +x then +y, NoC1 goes -y
then -x (dimension-ordered, static).  A message takes the NoC with fewer hops (NoC0 on a tie);
hop counts use physical NoC coordinates, so DRAM and Ethernet tiles inside the grid count.
Between chips, dimension-ordered routing over the chip mesh (columns first, then rows) crosses
Ethernet links; on each chip the message rides the NoC to the Ethernet tile facing the next
chip.  A chip pair joined by L links uses link `(a + b) mod L` for cores a and b, which spreads
flows over the links the way TT-Fabric's routing planes do.

Resources (each with a capacity in bytes/s) are numbered: per chip 4*W*H NoC links (noc, dim,
router) and 4*W*H NIU ports (inject/absorb per NoC per tile), then the Ethernet links.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .presets import DIRECTIONS, FabricSpec, load_spec

_OPPOSITE = {"east": "west", "west": "east", "south": "north", "north": "south"}


@dataclass(frozen=True)
class Route:
    """One message's path: the resources it holds, its hops, its unloaded rate and latency."""

    resources: tuple[int, ...]
    noc_hops: int
    eth_hops: int
    latency_s: float  # head latency: startup + per-hop delays (serialisation excluded)
    capacity: float  # the smallest capacity on the path, bytes/s


class Fabric:
    """A grid of cores joined by NoC tori, on one chip or a mesh of chips.

    Cores that may host agents are numbered 0..n_cores-1: chips in row-major order of the chip
    mesh, then rows, then columns of the physical grid ("row-major", the vendor placer's scan).
    """

    def __init__(self, spec: FabricSpec) -> None:
        self.spec = spec
        s = spec
        self.W, self.H = s.noc_cols, s.noc_rows
        wh = self.W * self.H
        self._per_chip = 8 * wh
        self._eth_base = s.chips * self._per_chip
        self.n_resources = self._eth_base + s.chips * len(DIRECTIONS) * s.eth_links_per_neighbour
        cap = np.empty(self.n_resources)
        for chip in range(s.chips):
            base = chip * self._per_chip
            cap[base : base + 4 * wh] = s.link_bytes_per_s
            cap[base + 4 * wh : base + 8 * wh] = s.niu_bytes_per_s
        cap[self._eth_base :] = s.eth_bytes_per_s
        self.capacity = cap
        local = [(x, y) for y in s.core_rows for x in s.core_columns]
        self.local_xy = np.array(local, dtype=np.int64).reshape(-1, 2)
        n_local = len(local)
        self.n_cores = s.chips * n_local
        self.core_chip = np.repeat(np.arange(s.chips), n_local)
        self.core_x = np.tile(self.local_xy[:, 0], s.chips)
        self.core_y = np.tile(self.local_xy[:, 1], s.chips)
        self._route_cache: dict[tuple[int, int], Route] = {}

    @classmethod
    def from_name(cls, name_or_path: str | Path) -> Fabric:
        """A fabric from a preset name or a fabric TOML file (see presets.py)."""
        return cls(load_spec(name_or_path))

    @property
    def name(self) -> str:
        return self.spec.name

    def core_of(self, chip: int, x: int, y: int) -> int:
        """The core index at physical coordinates (x, y) of `chip`."""
        s = self.spec
        n_local = s.cores_per_chip
        r, c = s.core_rows.index(y), s.core_columns.index(x)
        return chip * n_local + r * len(s.core_columns) + c

    def coords(self, core: int) -> tuple[int, int, int]:
        """(chip, x, y) of a core index, x and y physical NoC coordinates."""
        return int(self.core_chip[core]), int(self.core_x[core]), int(self.core_y[core])

    def chip_rc(self, chip: int) -> tuple[int, int]:
        return divmod(chip, self.spec.chip_cols)

    def describe_resource(self, r: int) -> str:
        """A readable name of resource `r` (for reports and traces)."""
        if r >= self._eth_base:
            chip, rest = divmod(r - self._eth_base, len(DIRECTIONS) * self.spec.eth_links_per_neighbour)
            d, plane = divmod(rest, self.spec.eth_links_per_neighbour)
            return f"eth chip{chip}->{DIRECTIONS[d]} link{plane}"
        chip, rest = divmod(r, self._per_chip)
        wh = self.W * self.H
        block, cell = divmod(rest, wh)
        y, x = divmod(cell, self.W)
        if block < 4:
            noc, dim = divmod(block, 2)
            arrow = ("+x", "+y", "-x", "-y")[noc * 2 + dim]
            return f"chip{chip} noc{noc} ({x},{y}){arrow}"
        kind, noc = divmod(block - 4, 2)
        return f"chip{chip} noc{noc} niu-{('inject', 'absorb')[kind]} ({x},{y})"

    def is_eth(self, r: int) -> bool:
        return r >= self._eth_base

    # ---------------------------------------------------------------- routes

    def noc_distance(self, sx: int, sy: int, dx: int, dy: int) -> int:
        """Hops between two tiles of one chip: the shorter of NoC0 and NoC1."""
        return min((dx - sx) % self.W + (dy - sy) % self.H, (sx - dx) % self.W + (sy - dy) % self.H)

    def _segment(self, chip: int, sx: int, sy: int, dx: int, dy: int, out: list[int]) -> int:
        """Append the resources of the NoC path (sx,sy)->(dx,dy) on `chip`; return its hops."""
        if sx == dx and sy == dy:
            return 0
        W, H = self.W, self.H
        wh = W * H
        base = chip * self._per_chip
        d0 = (dx - sx) % W + (dy - sy) % H
        d1 = (sx - dx) % W + (sy - dy) % H
        if d0 <= d1:  # NoC0: +x along row sy, then +y along column dx
            out.append(base + 4 * wh + sy * W + sx)  # NoC0 inject
            x = sx
            while x != dx:
                out.append(base + sy * W + x)
                x = (x + 1) % W
            y = sy
            while y != dy:
                out.append(base + wh + y * W + dx)
                y = (y + 1) % H
            out.append(base + 6 * wh + dy * W + dx)  # NoC0 absorb
            return d0
        out.append(base + 5 * wh + sy * W + sx)  # NoC1 inject
        y = sy
        while y != dy:  # NoC1: -y along column sx, then -x along row dy
            out.append(base + 3 * wh + y * W + sx)
            y = (y - 1) % H
        x = sx
        while x != dx:
            out.append(base + 2 * wh + dy * W + x)
            x = (x - 1) % W
        out.append(base + 7 * wh + dy * W + dx)  # NoC1 absorb
        return d1

    def chip_path(self, a_chip: int, b_chip: int) -> list[str]:
        """Directions of the chip-to-chip hops, columns first (dimension-ordered)."""
        (ar, ac), (br, bc) = self.chip_rc(a_chip), self.chip_rc(b_chip)
        path = ["east" if bc > ac else "west"] * abs(bc - ac)
        return path + ["south" if br > ar else "north"] * abs(br - ar)

    def route(self, a: int, b: int) -> Route:
        """The route of a message from core `a` to core `b` (cached)."""
        key = (a, b)
        hit = self._route_cache.get(key)
        if hit is not None:
            return hit
        s = self.spec
        chip, x, y = self.coords(a)
        b_chip, bx, by = self.coords(b)
        res: list[int] = []
        noc_hops = 0
        path = self.chip_path(chip, b_chip)
        plane = (a + b) % s.eth_links_per_neighbour
        step = {"east": (0, 1), "west": (0, -1), "south": (1, 0), "north": (-1, 0)}
        for d in path:
            gx, gy = s.gateways[d][plane]
            noc_hops += self._segment(chip, x, y, gx, gy, res)
            res.append(self._eth_base + (chip * len(DIRECTIONS) + DIRECTIONS.index(d))
                       * s.eth_links_per_neighbour + plane)
            r, c = self.chip_rc(chip)
            dr, dc = step[d]
            chip = (r + dr) * s.chip_cols + (c + dc)
            x, y = s.gateways[_OPPOSITE[d]][plane]
        noc_hops += self._segment(chip, x, y, bx, by, res)
        latency = 0.0
        if res:
            latency = s.message_overhead_s + noc_hops * s.hop_latency_s + len(path) * s.eth_hop_latency_s
        capacity = float(self.capacity[res].min()) if res else float("inf")
        route = Route(tuple(res), noc_hops, len(path), latency, capacity)
        self._route_cache[key] = route
        return route

    def transfer_rate(self, nbytes: float) -> float:
        """Unloaded NoC rate of one transfer (bytes/s): tt-npe's packet-size table."""
        s = self.spec
        size = min(max(nbytes, 1.0), s.max_packet_bytes)
        sizes = [p for p, _ in s.size_bandwidth]
        rates = [r for _, r in s.size_bandwidth]
        return float(np.interp(size, sizes, rates)) * s.clock_hz

    # ------------------------------------------------- all-pairs distances (placement)

    @cached_property
    def eth_hops(self) -> np.ndarray:
        """Chip-to-chip hop counts (chips x chips)."""
        s = self.spec
        rc = np.array([self.chip_rc(c) for c in range(s.chips)])
        return (np.abs(rc[:, None, 0] - rc[None, :, 0]) + np.abs(rc[:, None, 1] - rc[None, :, 1])).astype(np.int32)

    @cached_property
    def noc_hops(self) -> np.ndarray:
        """NoC hops of the route between every pair of cores (n_cores x n_cores, int16)."""
        s = self.spec
        n_local = s.cores_per_chip
        lx, ly = self.local_xy[:, 0], self.local_xy[:, 1]
        local = self._pair_hops(lx, ly, lx, ly)
        if s.chips == 1:
            return local.astype(np.int16)
        out = np.empty((self.n_cores, self.n_cores), dtype=np.int16)
        L = s.eth_links_per_neighbour
        gid = np.arange(n_local)
        for ca in range(s.chips):
            for cb in range(s.chips):
                block = out[ca * n_local : (ca + 1) * n_local, cb * n_local : (cb + 1) * n_local]
                if ca == cb:
                    block[:] = local
                    continue
                path = self.chip_path(ca, cb)
                plane_of = (ca * n_local + gid[:, None] + cb * n_local + gid[None, :]) % L
                for p in range(L):
                    first = s.gateways[path[0]][p]
                    last = s.gateways[_OPPOSITE[path[-1]]][p]
                    mid = sum(
                        self.noc_distance(*s.gateways[_OPPOSITE[d_in]][p], *s.gateways[d_out][p])
                        for d_in, d_out in zip(path, path[1:], strict=False)
                    )
                    to_gw = self._pair_hops(lx, ly, np.array([first[0]]), np.array([first[1]]))[:, 0]
                    from_gw = self._pair_hops(np.array([last[0]]), np.array([last[1]]), lx, ly)[0]
                    hops = to_gw[:, None] + mid + from_gw[None, :]
                    np.copyto(block, hops, where=plane_of == p)
        return out

    def _pair_hops(self, sx: np.ndarray, sy: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        d0 = (dx[None, :] - sx[:, None]) % self.W + (dy[None, :] - sy[:, None]) % self.H
        d1 = (sx[:, None] - dx[None, :]) % self.W + (sy[:, None] - dy[None, :]) % self.H
        return np.minimum(d0, d1)

    @property
    def eth_weight(self) -> float:
        """How many NoC hops one Ethernet hop is worth in placement cost (bandwidth ratio)."""
        return self.spec.link_bytes_per_s / self.spec.eth_bytes_per_s

    @cached_property
    def distance(self) -> np.ndarray:
        """Placement distance between cores: NoC hops + eth_weight x Ethernet hops (float64)."""
        d = self.noc_hops.astype(np.float64)
        if self.spec.chips > 1:
            d += self.eth_weight * self.eth_hops[self.core_chip[:, None], self.core_chip[None, :]]
        return d

    @cached_property
    def distance_flat(self) -> array:
        """`distance` as a flat array of Python floats: fast scalar reads in local search."""
        flat = array("d")
        flat.frombytes(np.ascontiguousarray(self.distance, dtype=np.float64).tobytes())
        return flat

    @cached_property
    def hops(self) -> np.ndarray:
        """Link traversals between cores: NoC hops + Ethernet hops (int32)."""
        h = self.noc_hops.astype(np.int32)
        if self.spec.chips > 1:
            h += self.eth_hops[self.core_chip[:, None], self.core_chip[None, :]]
        return h

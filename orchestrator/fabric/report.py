"""Reports of a placement or a simulation: PNG heatmaps, a Chrome/Perfetto trace, text tables.

The heatmap draws every chip of the fabric at its place in the chip mesh, on physical NoC
coordinates: the left panel colours each core by its load (simulated utilisation, or compute
per step against the busiest core when there is no simulation), the right panel draws every
loaded link as a segment coloured by its load (NoC0 links just above/right of the line between
two routers, NoC1 just below/left, Ethernet links between chips as dashed lines).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .placement import Placement, link_loads
from .presets import DIRECTIONS
from .simulate import SimResult


def write_trace(result: SimResult, path: str | Path) -> Path:
    """Write the simulated timeline as Chrome trace JSON (open in ui.perfetto.dev)."""
    if result.trace is None:
        raise ValueError("the simulation ran without trace=True")
    path = Path(path)
    doc = {"traceEvents": result.trace, "displayTimeUnit": "ns",
           "otherData": {"mode": result.mode, "microbatches": result.microbatches,
                         "step_time_s": result.step_time_s, "samples_per_s": result.samples_per_s}}
    path.write_text(json.dumps(doc))
    return path


def _chip_origin(placement: Placement, chip: int) -> tuple[int, int]:
    f = placement.fabric
    r, c = f.chip_rc(chip)
    return c * (f.W + 1), r * (f.H + 1)


def heatmap_png(placement: Placement, path: str | Path, result: SimResult | None = None) -> Path:
    """Core-load and link-load heatmaps of a placement (and of its simulation, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    f = placement.fabric
    s = f.spec
    width, height = s.chip_cols * (f.W + 1) - 1, s.chip_rows * (f.H + 1) - 1
    grid = np.full((height, width), np.nan)
    for core in range(f.n_cores):  # cores that exist but hold nothing show as zero
        chip, x, y = f.coords(core)
        ox, oy = _chip_origin(placement, chip)
        grid[oy + y, ox + x] = 0.0
    if result is not None:
        for c in result.cores:
            ox, oy = _chip_origin(placement, c["chip"])
            grid[oy + c["y"], ox + c["x"]] = c["utilisation"]
        core_label, link_label = "core utilisation (simulated)", "link utilisation (simulated)"
        loads = np.zeros(f.n_resources)
        for lk in result.links:
            loads[lk["resource"]] = lk["utilisation"]
    else:
        p = placement.problem
        per_core = np.bincount(placement.unit_core, weights=p.unit_load, minlength=f.n_cores)
        for core in np.flatnonzero(per_core):
            chip, x, y = f.coords(int(core))
            ox, oy = _chip_origin(placement, chip)
            grid[oy + y, ox + x] = per_core[core] / p.load_cap
        core_label, link_label = "compute per step / core cap", "bytes per step / busiest link"
        loads = link_loads(p, placement.unit_core)
        loads[f.capacity > 0] /= f.capacity[f.capacity > 0]
        top = loads.max() if loads.size else 0.0
        loads = loads / top if top > 0 else loads
    scale = max(5.0, min(14.0, width * 0.3))
    fig, axes = plt.subplots(1, 2, figsize=(2 * scale + 2, scale * height / width + 1.0))
    ax = axes[0]
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(1.0, np.nanmax(grid) if np.isfinite(grid).any() else 1.0),
                   origin="upper")
    fig.colorbar(im, ax=ax, shrink=0.8, label=core_label)
    if f.n_cores <= 128:  # small grids: name the agents on their cores
        for name in placement.problem.agent_names:
            for core in placement.cores_of(name)[:1]:
                chip, x, y = f.coords(core)
                ox, oy = _chip_origin(placement, chip)
                ax.text(ox + x, oy + y, name[:6], ha="center", va="center", fontsize=6, color="white")
    ax.set_title(f"{f.name}: {placement.method} placement")
    segments, values, eth_segments, eth_values = [], [], [], []
    wh = f.W * f.H
    for r in np.flatnonzero(loads > 0):
        r = int(r)
        if f.is_eth(r):
            chip, rest = divmod(r - f._eth_base, len(DIRECTIONS) * s.eth_links_per_neighbour)
            d, plane = divmod(rest, s.eth_links_per_neighbour)
            direction = DIRECTIONS[d]
            gx, gy = s.gateways[direction][plane]
            step = {"east": (0, 1), "west": (0, -1), "south": (1, 0), "north": (-1, 0)}[direction]
            cr, cc = f.chip_rc(chip)
            other = (cr + step[0]) * s.chip_cols + cc + step[1]
            opposite = {"east": "west", "west": "east", "south": "north", "north": "south"}[direction]
            hx, hy = s.gateways[opposite][plane]
            (ax0, ay0), (bx0, by0) = _chip_origin(placement, chip), _chip_origin(placement, other)
            eth_segments.append([(ax0 + gx, ay0 + gy), (bx0 + hx, by0 + hy)])
            eth_values.append(loads[r])
            continue
        chip, rest = divmod(r, 8 * wh)
        block, cell = divmod(rest, wh)
        if block >= 4:
            continue  # NIU ports are not links
        y, x = divmod(cell, f.W)
        noc, dim = divmod(block, 2)
        sign = 1 if noc == 0 else -1
        off = 0.12 * sign
        ox, oy = _chip_origin(placement, chip)
        if dim == 0:
            end = x + sign if 0 <= x + sign < f.W else x + 0.45 * sign  # wrap: a stub
            segments.append([(ox + x, oy + y - off), (ox + end, oy + y - off)])
        else:
            end = y + sign if 0 <= y + sign < f.H else y + 0.45 * sign
            segments.append([(ox + x + off, oy + y), (ox + x + off, oy + end)])
        values.append(loads[r])
    ax = axes[1]
    ax.imshow(np.where(np.isnan(grid), np.nan, 1.0), cmap="Greys", vmin=0, vmax=6, origin="upper")
    vmax = max(values + eth_values + [1e-12])
    if segments:
        lc = LineCollection(segments, array=np.array(values), cmap="plasma", linewidths=2.0)
        lc.set_clim(0, vmax)
        ax.add_collection(lc)
        fig.colorbar(lc, ax=ax, shrink=0.8, label=link_label)
    if eth_segments:
        ec = LineCollection(eth_segments, array=np.array(eth_values), cmap="plasma", linewidths=2.5,
                            linestyles="dashed")
        ec.set_clim(0, vmax)
        ax.add_collection(ec)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_title("link load (NoC0 right/down above, NoC1 left/up below; dashed: Ethernet)", fontsize=8)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def placement_table(placement: Placement, limit: int = 40) -> str:
    """Agents and their cores, then the cost, as plain text."""
    lines = [f"{placement.fabric.name}: {placement.method} placement of "
             f"{len(placement.problem.agent_names)} agents in {placement.seconds:.2f} s"]
    for name in placement.problem.agent_names[:limit]:
        cores = [placement.fabric.coords(c) for c in placement.cores_of(name)]
        where = ", ".join(f"chip{ch}({x},{y})" for ch, x, y in cores[:4]) + (" ..." if len(cores) > 4 else "")
        lines.append(f"  {name:<16} {where}")
    if len(placement.problem.agent_names) > limit:
        lines.append(f"  ... {len(placement.problem.agent_names) - limit} more")
    c = placement.cost
    lines.append(f"hop-bytes {c['hop_bytes']:.4g} B/step, busiest link {c['max_link_load']:.4g} B/step "
                 f"({c['max_link'] or 'none'}), Ethernet {c['eth_bytes']:.4g} B/step, {c['cores_used']} cores used")
    return "\n".join(lines)


def simulation_table(result: SimResult) -> str:
    """The simulation's headline figures as plain text."""
    cp = result.critical_path
    busiest = result.links[0]["name"] if result.links else "none"
    return "\n".join([
        f"mode {result.mode}, {result.microbatches} micro-batch(es) per step ({result.schedule}), "
        f"{result.steps} steps simulated",
        f"step time {result.step_time_s * 1e3:.4g} ms, {result.samples_per_s:.4g} samples/s",
        f"core utilisation {result.core_utilisation:.1%} (mean over {len(result.cores)} cores), "
        f"busiest link {result.link_utilisation_max:.1%} ({busiest})",
        f"critical path of the last step: {cp.get('compute_s', 0) * 1e3:.4g} ms compute, "
        f"{cp.get('communication_s', 0) * 1e3:.4g} ms messages over {cp.get('length', 0)} segments",
    ])

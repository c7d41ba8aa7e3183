"""Topologies built in code: the documents that topology TOML files hold, as plain dicts.

Tests and benchmarks build their topologies here instead of writing TOML by hand.  A document
has the tables of a topology file (orchestrator/config.py): `run`, `agents`, `links` and an
optional `link_defaults`.  `to_toml` and `write` turn it into a file for `synthgrad run`;
`parse` validates it into a `Topology` without a file.  No torch is imported.

    >>> from synthgrad.orchestrator import builder
    >>> doc = builder.chain(2, width=64, mode="dni", sg={"model": "linear"}, run={"steps": 10})
    >>> [link["from"] + " -> " + link["to"] for link in doc["links"]]
    ['source.x -> l1', 'l1 -> l2', 'l2 -> head', 'source.y -> head.labels']
    >>> builder.parse(doc).links[1].mode.value
    'dni'

`builder.write(doc, "chain.toml")` writes the file that `synthgrad run chain.toml` runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import tomli_w

from .config import Topology, apply_override, validate

DEFAULT_RUN: dict[str, Any] = {"steps": 1}  # the fewest run settings a topology can have


def agent(kind: str, **params: Any) -> dict:
    """An agent's table: its registered `kind` and its parameters (e.g. `width`, `tick_every`)."""
    return {"kind": kind, **params}


def link(
    src: str, dst: str, mode: str | None = None, sg: Mapping | None = None, **options: Any
) -> dict:
    """A link's table from `src` to `dst` ("agent" or "agent.port").

    `mode` and `sg` are left out when None, so that `link_defaults` applies; `options` are the
    other link keys (`p_update=0.5`, or `**{"lambda": 0.5}`).
    """
    table: dict[str, Any] = {"from": src, "to": dst}
    if mode is not None:
        table["mode"] = mode
    if sg is not None:
        table["sg"] = dict(sg)
    return {**table, **options}


def topology(
    agents: Mapping[str, Mapping],
    links: Iterable[Mapping | tuple[str, str]] = (),
    *,
    run: Mapping | None = None,
    link_defaults: Mapping | None = None,
) -> dict:
    """A topology document: `agents` by name, `links` in order, `run` settings, `link_defaults`.

    A link is a table (see `link`) or a `(from, to)` pair.  `run` defaults to `{"steps": 1}`;
    `link_defaults` is left out when empty.  The tables are copied, never shared.
    """
    doc: dict[str, Any] = {
        "run": copy.deepcopy(dict(DEFAULT_RUN if run is None else run)),
        "agents": {name: copy.deepcopy(dict(table)) for name, table in agents.items()},
        "links": [
            copy.deepcopy(dict(entry)) if isinstance(entry, Mapping) else link(*entry)
            for entry in links
        ],
    }
    if link_defaults:
        doc["link_defaults"] = copy.deepcopy(dict(link_defaults))
    return doc


def chain(
    layers: int | Mapping[str, Mapping] = 2,
    *,
    width: int = 256,
    mode: str | None = None,
    sg: Mapping | None = None,
    dataset: str | None = "mnist",
    classes: int = 10,
    labels: bool = True,
    labels_mode: str | None = None,
    run: Mapping | None = None,
) -> dict:
    """The common chain: source -> layers -> head, and the labels link source.y -> head.labels.

    `layers` is a number of dense layers of `width` (named l1, l2, ...) or the layers' tables
    by name, in order.  `mode` and `sg` go to `link_defaults`, so they apply to every link
    that does not set its own; `labels_mode` sets the labels link's mode, and `labels=False`
    leaves that link out.  `dataset=None` leaves the source's dataset to its default.
    """
    if isinstance(layers, int):
        layers = {f"l{i}": agent("dense", width=width) for i in range(1, layers + 1)}
    source = agent("source") if dataset is None else agent("source", dataset=dataset)
    agents = {"source": source, **layers, "head": agent("head", classes=classes)}
    names = ["source.x", *layers, "head"]
    links = [link(src, dst) for src, dst in pairwise(names)]
    if labels:
        links.append(link("source.y", "head.labels", labels_mode))
    defaults: dict[str, Any] = {}
    if mode is not None:
        defaults["mode"] = mode
    if sg is not None:
        defaults["sg"] = dict(sg)
    return topology(agents, links, run=run, link_defaults=defaults)


def to_toml(doc: Mapping, header: str = "") -> str:
    """The document as TOML text; each line of `header` becomes a leading `# ` comment."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + tomli_w.dumps(doc)


def write(doc: Mapping, path: str | Path, header: str = "") -> Path:
    """Write the document as a topology file at `path` (see `to_toml`); returns the path."""
    path = Path(path)
    path.write_text(to_toml(doc, header))
    return path


def parse(doc: Mapping, overrides: Iterable[str] = (), name: str = "run") -> Topology:
    """The validated `Topology` of a document, after `--set`-style `overrides` ("a.b=value").

    `name` stands in for a file's stem when `run.name` is absent.  The document is not changed.

    Raises:
        ConfigError: naming the key path of the first problem found.
    """
    doc = copy.deepcopy(dict(doc))
    for assignment in overrides:
        apply_override(doc, assignment)
    return validate(doc, default_name=name)

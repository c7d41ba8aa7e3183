"""Property: any topology broken in one place is refused by `synthgrad run` with exit 2, a
message that names the broken key, no traceback, no process and no run directory.

Hypothesis breaks a real example in one of three ways, each invalid by construction:
a value replaced by one of a type that key never takes, an unknown key added to a table, or a
required key removed.
"""

from __future__ import annotations

import datetime
import math
import tomllib
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthgrad.orchestrator.cli import main

from ..conftest import EXAMPLES

EXAMPLE_FILES = ["mnist_dni.toml", "mnist_cdni.toml", "mnist_cnn_cdni.toml", "copy_dni.toml", "two_timescale.toml"]
DOCS = {name: tomllib.loads((EXAMPLES / name).read_text()) for name in EXAMPLE_FILES}
# Keys whose every string is a valid value (names), so a string there breaks nothing.
FREE_TEXT = {"name", "runs_dir"}
REQUIRED = {"from", "to", "kind"}

texts = st.text(alphabet="abcxyz_0123 .", min_size=1, max_size=12)
key_names = st.text(alphabet="abcxyz_0123", min_size=1, max_size=8)
dates = st.dates(min_value=datetime.date(1970, 1, 1), max_value=datetime.date(2100, 1, 1))
tables = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), min_size=1, max_size=2)
non_integral = st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not math.isfinite(f) or f != int(f))


def _leaves(node, path=()):
    """(path, value) of every scalar in a document; list entries by index."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, (dict, list)) and not (isinstance(value, list) and value and not isinstance(value[0], dict)):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def _tables(node, path=()):
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from _tables(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _tables(value, (*path, index))


def _wrong_values(value) -> st.SearchStrategy:
    """Values of a type that a key holding `value` never accepts (no coercion anywhere)."""
    if isinstance(value, bool):
        return st.one_of(st.integers(0, 1), st.floats(), texts, dates, tables)
    if isinstance(value, int):
        return st.one_of(st.booleans(), non_integral, texts, dates, tables)
    if isinstance(value, float):
        return st.one_of(st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]), texts, dates, tables)
    if isinstance(value, str):
        return st.one_of(st.booleans(), st.integers(), dates, tables, st.lists(st.integers(), max_size=2))
    return st.one_of(st.booleans(), texts, dates, tables)  # lists (sg.hidden, lr_decay_at)


@st.composite
def broken(draw):
    """(file name, broken document, the dotted key the error must name)."""
    name = draw(st.sampled_from(EXAMPLE_FILES))
    doc = tomllib.loads(tomli_w.dumps(DOCS[name]))  # a deep copy
    how = draw(st.sampled_from(["value", "unknown", "remove"]))
    if how == "value":
        leaves = [(p, v) for p, v in _leaves(doc) if not (p[-1] in FREE_TEXT and isinstance(v, str))]
        path, value = draw(st.sampled_from(leaves))
        wrong = draw(_wrong_values(value))
    elif how == "unknown":
        path = (*draw(st.sampled_from([p for p in _tables(doc) if p and p != ("agents",)])), "zzq_" + draw(key_names))
        wrong = draw(st.integers(0, 3))
    else:
        removable = [p for p, _ in _leaves(doc) if p[-1] in REQUIRED]
        path, wrong = draw(st.sampled_from(removable)), None
    node = doc
    for key in path[:-1]:
        node = node[key]
    if wrong is None:
        del node[path[-1]]
    else:
        node[path[-1]] = wrong
    return name, doc, ".".join(str(k) for k in path)


def _children() -> set[int]:
    found = set()
    for task in Path("/proc/self/task").iterdir():
        found |= {int(pid) for pid in (task / "children").read_text().split()}
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=broken())
def test_a_topology_broken_anywhere_exits_2_naming_the_key(case, tmp_path_factory, capsys):
    name, doc, key = case
    work = tmp_path_factory.mktemp("broken")
    path = work / name
    path.write_text(tomli_w.dumps(doc))
    runs = work / "runs"
    before = _children()
    rc = main(["run", str(path), "--runs-dir", str(runs), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert key in err, f"the message should name {key!r}: {err}"
    assert "Traceback" not in err
    assert not runs.exists(), "a refused topology must not create a run directory"
    assert _children() <= before, "a refused topology must not start a process"

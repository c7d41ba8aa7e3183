"""docs/PROTOCOL.md stays true to the code: its example, tables and promises."""

import datetime
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from synthgrad.protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    WIRE_DTYPES,
    Kind,
    Message,
    decode,
    encode,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "docs" / "PROTOCOL.md").read_text()


def test_the_annotated_example_is_what_the_encoder_produces() -> None:
    block = SPEC.split("<!-- example-frame0")[1].split("```text")[1].split("```")[0]
    hex_bytes = []
    for line in block.strip().splitlines():
        hex_bytes += line.split("|")[0].split()[1:]  # drop the offset column and the ASCII
    documented = bytes.fromhex("".join(hex_bytes))
    ts = int(datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc).timestamp()) * 10**9
    msg = Message(Kind.ACT, src="l1", port="in", step=7, tick=7, run="r1", ts=ts,
                  tensors={"h": np.array([1.0, -2.0], dtype=np.float32)})
    assert encode(msg) == [documented]
    assert decode([documented]).tensors["h"].tolist() == [1.0, -2.0]


def test_the_kind_table_matches_the_codes() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", SPEC, re.MULTILINE))
    assert {int(code): name for code, name in rows.items()} == {k.value: k.name for k in Kind}


def test_the_dtype_table_matches_the_allow_list() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\d) \| \S", SPEC, re.MULTILINE)
    assert [(name, int(size)) for name, size in rows] == [
        (name, dtype.itemsize) for name, dtype in WIRE_DTYPES.items()
    ]


def test_the_limit_table_matches_the_defaults() -> None:
    rows = re.findall(r"^\| `(max_\w+)` \| (\d+)( GiB)?", SPEC, re.MULTILINE)
    assert {name: int(value) << (30 if gib else 0) for name, value, gib in rows} == {
        name: getattr(DEFAULT_LIMITS, name) for name, _, _ in rows
    }
    assert len(rows) == 6


def test_the_version_is_the_documented_one() -> None:
    assert f"version {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}" in SPEC.splitlines()[0]


def test_the_protocol_package_needs_no_torch() -> None:
    code = "import sys, synthgrad.protocol; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_nothing_from_the_wire_is_unpickled_or_evaluated() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "protocol").glob("*.py"))
    for banned in ("pickle", "marshal", "eval(", "exec(", "object_hook"):
        assert banned not in source, banned

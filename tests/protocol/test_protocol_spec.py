"""docs/PROTOCOL.md stays true to the code: every example, table and promise it makes.

Examples are fenced blocks (docs/PROTOCOL.md, "Examples"):

    ```hex example=NAME [canonical]     a hex dump: "OFFSET  16 bytes  |ASCII|" lines, and a
                                        "frame K" line before each frame of a multipart message
    ```json expect=NAME                 what it decodes to, or {"reject": TEXT}
    ```json example=NAME kind=KIND      the meta of a message of that kind, as JSON

Each dump is checked byte by byte (offsets and ASCII column included), decoded with the
reference decoder and compared with its expectation field by field; a `canonical` dump must
also be exactly what the reference encoder writes for the expected message.  Constants the
spec quotes from modules that import torch are read from their source with `ast`, so that this
file stays torch-free like `synthgrad.protocol`.
"""

import ast
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthgrad.protocol import (
    DEFAULT_HWM,
    DEFAULT_INLINE_THRESHOLD,
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    WIRE_DTYPES,
    IpcNamespace,
    Kind,
    Message,
    ProtocolError,
    decode,
    encode,
)
from synthgrad.protocol.lifecycle import Lifecycle
from synthgrad.protocol.plan import AgentPlan, LinkPlan, RunSettings, SGOptions

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "docs" / "PROTOCOL.md").read_text()

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_DUMP_LINE = re.compile(r"^([0-9a-f]{4})  ((?:[0-9a-f]{2}[ ]{1,2}){0,15}[0-9a-f]{2})\s+\|(.*)\|$")


# ----------------------------------------------------------------------------- reading the spec


def section(number: str, text: str = SPEC) -> str:
    """The text of section `number` ("5", "12.8") up to the next heading of its level or above."""
    level = "#" * (2 + number.count("."))
    start = re.search(rf"^{level} {re.escape(number)}\.? .*$", text, re.MULTILINE)
    assert start, f"docs/PROTOCOL.md has no section {number}"
    rest = text[start.end():]
    end = re.search(rf"^#{{2,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def fenced_blocks(text: str) -> list[tuple[dict, str]]:
    """(attributes of the info string, body) for every fenced block; the language is `lang`."""
    blocks = []
    for info, body in _FENCE.findall(text):
        words = info.split()
        attrs = {"lang": words[0] if words else ""}
        for word in words[1:]:
            key, _, value = word.partition("=")
            attrs[key] = value if value else True
        blocks.append((attrs, body))
    return blocks


def examples(text: str = SPEC) -> tuple[dict, dict, dict]:
    """(hex dumps by name: (attrs, body), expectations by name, meta examples by name)."""
    dumps, expects, metas = {}, {}, {}
    for attrs, body in fenced_blocks(text):
        if attrs["lang"] == "hex" and "example" in attrs:
            target = dumps
        elif attrs["lang"] == "json" and "expect" in attrs:
            target, attrs = expects, {**attrs, "example": attrs["expect"]}
        elif attrs["lang"] == "json" and "example" in attrs:
            target = metas
        else:
            continue
        name = attrs["example"]
        assert name not in target, f"example {name!r} appears twice"
        target[name] = (attrs, body)
    return dumps, expects, metas


def parse_dump(body: str) -> list[bytes]:
    """The frames of a hex dump, checking its offset column and its ASCII column."""
    frames: list[bytearray] = []
    for line in body.strip().splitlines():
        heading = re.fullmatch(r"frame (\d+)", line.strip())
        if heading:
            assert int(heading.group(1)) == len(frames), f"{line!r}: frames are numbered 0, 1, ..."
            frames.append(bytearray())
            continue
        match = _DUMP_LINE.match(line)
        assert match, f"not a hex dump line: {line!r}"
        if not frames:
            frames.append(bytearray())
        offset, hexes, text = match.groups()
        chunk = bytes.fromhex(hexes.replace(" ", ""))
        # Only a frame's last line may be short, so each line's offset is a multiple of 16.
        assert int(offset, 16) == len(frames[-1]) and len(frames[-1]) % 16 == 0, (
            f"{line!r}: the offset should be {len(frames[-1]):04x}, after full lines of 16"
        )
        shown = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        assert text == shown, f"{line!r}: the ASCII column should be |{shown}|"
        frames[-1] += chunk
    assert frames and all(frames), "a dump with an empty frame"
    return [bytes(f) for f in frames]


def decoded_fields(frames: list[bytes]) -> dict:
    """A decoded message in the form of an expectation block."""
    msg = decode(frames)
    return {
        "frames": len(frames),
        "kind": msg.kind.name,
        "version": list(msg.version),
        "step": msg.step,
        "tick": msg.tick,
        "ts": msg.ts,
        "run": msg.run,
        "src": msg.src,
        "port": msg.port,
        "meta": msg.meta,
        "tensors": {
            name: {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.tolist()}
            for name, a in msg.tensors.items()
        },
    }


def message_of(expect: dict) -> Message:
    """The message an expectation block describes, for the encoder."""
    tensors = {
        name: np.array(t["values"], dtype=WIRE_DTYPES[t["dtype"]]).reshape(t["shape"])
        for name, t in expect["tensors"].items()
    }
    return Message(
        Kind[expect["kind"]], expect["src"], expect["port"], expect["step"], expect["tick"],
        expect["run"], tensors, expect["meta"], expect["ts"],
    )


def check_example(name: str, attrs: dict, dump: str, expect_text: str) -> None:
    """Raise AssertionError unless the dump decodes (or is refused) as its expectation says."""
    frames = parse_dump(dump)
    expect = json.loads(expect_text)
    if "reject" in expect:
        assert set(expect) == {"reject"}, f"{name}: a reject expectation holds only 'reject'"
        try:
            decode(frames)
        except ProtocolError as err:
            assert expect["reject"] in str(err), f"{name}: refused, but because {err}"
        else:
            raise AssertionError(f"{name}: the spec says it is refused, but it decodes")
        return
    try:
        got = decoded_fields(frames)
    except ProtocolError as err:
        raise AssertionError(f"{name}: the spec says it decodes, but it is refused: {err}") from err
    assert got == expect, f"{name}: decodes to {got}, the spec says {expect}"
    if attrs.get("canonical"):
        threshold = 0 if len(frames) > 1 else DEFAULT_INLINE_THRESHOLD
        encoded = [bytes(f) for f in encode(message_of(expect), threshold)]
        assert encoded == frames, f"{name}: the reference encoder writes {[f.hex() for f in encoded]}"


DUMPS, EXPECTS, METAS = examples()


# ----------------------------------------------------------------------------- the examples


def test_the_spec_has_its_examples_and_each_dump_its_expectation() -> None:
    assert set(DUMPS) == set(EXPECTS), "every hex example needs a json expect block and back"
    # The examples the text refers to by name; a new one is welcome, a lost one is not.
    assert {
        "act", "shape-int-formats", "dup-key", "bin-key", "negative-dim", "too-deep",
        "hello", "grad-frame", "ctx-eval",
    } <= set(DUMPS)
    assert {"welcome", "eval-report"} <= set(METAS)
    for name in re.findall(r"[Ee]xamples? `([a-z0-9-]+)`", SPEC):
        assert name in DUMPS or name in METAS, f"the text names example {name!r}, which is not there"


@pytest.mark.parametrize("name", sorted(DUMPS))
def test_every_example_decodes_as_the_spec_says(name: str) -> None:
    attrs, dump = DUMPS[name]
    check_example(name, attrs, dump, EXPECTS[name][1])


def test_the_checks_catch_a_changed_example() -> None:
    """The example test can fail: a changed byte, value or claim is caught."""
    attrs, dump = DUMPS["act"]
    expect = EXPECTS["act"][1]
    check_example("act", attrs, dump, expect)
    changes = [
        (dump.replace("00 00 80 3f", "00 00 40 40"), expect),  # h[0] is 3.0, not 1.0
        (dump.replace("07 00 00 00 00 00 00 00  00 00 e3", "08 00 00 00 00 00 00 00  00 00 e3"), expect),
        (dump.replace("0050  ", "0048  "), expect),  # a wrong offset column
        (dump.replace("|eta........?....|", "|eta.........?...|"), expect),  # a wrong ASCII column
        (dump, expect.replace('"step": 7', '"step": 8')),
        (dump, expect.replace("-2.0", "-2.5")),
        (DUMPS["dup-key"][1], expect),  # a refused message is not the example's
        (dump, '{"reject": "appears twice"}'),  # a valid message is not refused
    ]
    for changed_dump, changed_expect in changes:
        with pytest.raises(AssertionError):
            check_example("act", attrs, changed_dump, changed_expect)
    # canonical: a dump that decodes right but is not what the encoder writes
    attrs, dump = DUMPS["shape-int-formats"]
    with pytest.raises(AssertionError, match="reference encoder"):
        check_example("shape", {**attrs, "canonical": True}, dump, EXPECTS["shape-int-formats"][1])


@pytest.mark.parametrize("name", sorted(METAS))
def test_every_meta_example_travels_in_its_kind(name: str) -> None:
    attrs, body = METAS[name]
    meta = json.loads(body)
    msg = Message(Kind[attrs["kind"]], src="" if attrs["kind"] == "WELCOME" else "l2", run="r", meta=meta)
    assert decode(encode(msg)).meta == meta


def test_the_welcome_example_is_a_complete_plan_and_its_endpoints() -> None:
    meta = json.loads(METAS["welcome"][1])
    assert set(meta) == {"spec", "endpoints", "run_dir", "incarnations"}
    assert meta["incarnations"] == {}  # no agent restarted yet
    # The optional keys (a checkpoint to start from; on tcp, the ports a restart binds).
    assert "`restore`" in section("12.3") and "`bind`" in section("12.11")
    spec = meta["spec"]
    # Every key the records write is in the example, with the value the records read back.
    assert AgentPlan.from_wire(spec).to_wire() == spec
    plan = AgentPlan.from_wire(spec)
    peers = {link.src for link in plan.in_links} | {link.dst for link in plan.out_links}
    assert {plan.name} | peers <= set(meta["endpoints"])
    ipc_dir = meta["endpoints"][plan.name]["fwd"].removeprefix("ipc://").rsplit("/", 1)[0]
    ns = IpcNamespace.attach(ipc_dir)
    for name, eps in meta["endpoints"].items():
        assert eps == {"fwd": ns.endpoint(f"{name}.f"), "bwd": ns.endpoint(f"{name}.b")}
    assert "`ipc://IPC_DIR/NAME.f`" in section("12.2") and "`ipc://IPC_DIR/NAME.b`" in section("12.2")
    assert Path(meta["run_dir"]).is_absolute()
    assert meta["run_dir"].rsplit("/", 1)[1].startswith(plan.run.name + "-")


def test_the_eval_report_example_has_the_keys_the_spec_lists() -> None:
    meta = json.loads(METAS["eval-report"][1])
    assert list(meta) == ["eval", "final", "train_steps", "test_accuracy", "test_loss"]
    assert "`{\"eval\", \"final\", \"train_steps\", \"test_accuracy\", \"test_loss\"}`" in section("12.5")


# ----------------------------------------------------------------------------- the tables


def test_the_kind_table_matches_the_codes() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", section("6"), re.MULTILINE))
    assert {int(code): name for code, name in rows.items()} == {k.value: k.name for k in Kind}


def test_the_dtype_table_matches_the_allow_list() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\d) \| \S", section("5"), re.MULTILINE)
    assert [(name, int(size)) for name, size in rows] == [
        (name, dtype.itemsize) for name, dtype in WIRE_DTYPES.items()
    ]


def test_the_limit_table_matches_the_defaults() -> None:
    rows = re.findall(r"^\| `(max_\w+)` \| (\d+)( GiB)?", section("7"), re.MULTILINE)
    assert {name: int(value) << (30 if gib else 0) for name, value, gib in rows} == {
        f.name: getattr(DEFAULT_LIMITS, f.name) for f in dataclasses.fields(DEFAULT_LIMITS)
    }
    assert "deeper than 3 + `max_meta_depth` levels" in section("4")


def test_the_version_is_the_documented_one() -> None:
    assert f"version {PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}" in SPEC.splitlines()[0]


def module_constant(path: str, name: str) -> object:
    """A module-level constant of a source file, read without importing it (torch-free)."""
    tree = ast.parse((ROOT / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} defines no constant {name}")


def test_the_reject_reasons_are_the_runtime_s() -> None:
    text = section("12.8")
    rows = re.findall(r"^\| `([a-z]+)` \| ", text, re.MULTILINE)
    assert tuple(rows) == module_constant("agents/runtime/admission.py", "REASONS")
    assert "`REASONS` in\n`agents/runtime/admission.py`" in text


def test_the_timers_are_the_code_s() -> None:
    text = section("12.6")
    constants = re.findall(r"^\| [^|]+ \| ([\d.]+) s \| `([A-Z_]+)` in `([\w/.]+)` \|", text, re.MULTILINE)
    assert {name for _, name, _ in constants} == {"HEARTBEAT_S", "ORPHAN_S", "STOP_GRACE_S", "GRACE_S", "ROUND_TIMEOUT_S"}
    for value, name, path in constants:
        assert float(value) == module_constant(path, name), name
    settings = re.findall(r"^\| [^|]+ \| ([\d.]+) s \| `run\.(\w+)`", text, re.MULTILINE)
    assert {name for _, name in settings} == {
        "heartbeat_s", "metrics_every_s", "hang_timeout_s", "register_timeout_s", "restart_backoff_s", "checkpoint_every_s",
    }
    for value, name in settings:
        assert float(value) == getattr(RunSettings(), name), name


def test_the_high_water_marks_are_the_code_s() -> None:
    text = section("12.2")
    assert f"| {DEFAULT_HWM} (`DEFAULT_HWM`) |" in text
    assert text.count(f"`run.hwm` of the plan (default {RunSettings().hwm})") == 1
    assert text.count(f"`run.hwm` (default {RunSettings().hwm})") == 1


def test_the_plan_tables_name_every_field() -> None:
    text = section("12.3")
    run_row = re.search(r"^\| `run` \| map \| .*\(`RunSettings`: (.*)\) \|$", text, re.MULTILINE)
    assert run_row and re.findall(r"`(\w+)`", run_row.group(1)) == [f.name for f in dataclasses.fields(RunSettings)]
    sg = re.search(r"`SGOptions`: (.*?)\)", text, re.DOTALL)
    assert sg and re.findall(r"`(\w+)`", sg.group(1)) == [f.name for f in dataclasses.fields(SGOptions)]
    keys = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", text, re.MULTILINE))
    documented = {k for pair in keys for k in pair if k}
    assert {f.name for f in dataclasses.fields(AgentPlan)} <= documented
    link = re.search(r"A link map \(`LinkPlan`\): (.*?)\.\s", text, re.DOTALL)
    named = set(re.findall(r"`(\w+)`", link.group(1)))
    assert {f.name for f in dataclasses.fields(LinkPlan)} - {"p_update"} <= named and "options" in named


def test_the_lifecycle_states_are_the_code_s() -> None:
    states = re.search(r"\.Lifecycle`\):\s*(.*?);", section("12.9"), re.DOTALL)
    assert states and re.findall(r"`(\w+)`", states.group(1)) == [s.value for s in Lifecycle]


# ----------------------------------------------------------------------------- promises


def test_the_protocol_package_needs_no_torch() -> None:
    code = "import sys, synthgrad.protocol; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_nothing_from_the_wire_is_unpickled_or_evaluated() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "protocol").glob("*.py"))
    for banned in ("pickle", "marshal", "eval(", "exec(", "object_hook"):
        assert banned not in source, banned

"""Fuzzing the decoder: whatever the bytes, it returns a Message or raises ProtocolError.

Over 20,000 inputs per run, from a fixed seed: random frames, valid messages mutated byte by
byte and frame by frame, and valid prefixes carrying random msgpack structures (so that the
validation behind the msgpack parser is reached, not just the magic check).  Anything other
than ProtocolError escaping ``decode`` fails the test with the input that caused it.
"""

import random
import struct

import ml_dtypes
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthgrad.protocol import DEFAULT_LIMITS, Kind, Limits, Message, ProtocolError, decode, encode

from .wirecraft import craft

pytestmark = pytest.mark.timeout(120)

SEED = 20261124
TIGHT = Limits(max_tensors=3, max_dims=3, max_tensor_bytes=4096, max_message_bytes=8192,
               max_meta_depth=2, max_meta_items=16)


def corpus() -> list[list[bytes]]:
    """Valid messages of several shapes, as received (bytes frames)."""
    msgs = [
        (Message(Kind.ACT, src="l1", port="in", step=3, run="r",
                 tensors={"h": np.arange(6, dtype=np.float32).reshape(2, 3),
                          "m": np.array([True, False])}), 1 << 16),
        (Message(Kind.GRAD, src="l2", port="out", tensors={
            "g": np.ones((4, 4), np.float64), "s": np.arange(3, dtype=np.int8)}), 64),
        (Message(Kind.METRICS, src="head", meta={"loss": 0.5, "hist": [1, 2, {"a": None}],
                                                 "blob": b"\x00\x01"}), 1 << 16),
        (Message(Kind.HEARTBEAT, src="a"), 1 << 16),
        (Message(Kind.ERROR, src="a", meta={"error": "boom"}), 1 << 16),
        (Message(Kind.CTX, src="data", tensors={"y": np.array(7, np.int64),
                                                "e": np.zeros((0, 2), np.int16)}), 0),
        (Message(Kind.SYNTH_INPUT, src="src", port="in", tensors={
            "b": np.ones(5, dtype=ml_dtypes.bfloat16), "f": np.ones(3, np.float16)}), 1 << 16),
    ]
    return [[bytes(memoryview(f).cast("B")) for f in encode(m, t)] for m, t in msgs]


def random_primitive(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(10 if depth < 3 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice([0, 1, -1, 2, 7, 2**31, -(2**63), 2**64 - 1, rng.randrange(-999, 999)])
    if choice == 3:
        return rng.choice([0.0, -1.5, float("nan"), float("inf")])
    if choice == 4:
        return rng.choice(["", "h", "float32", "bool", "bfloat16", "in", "x" * rng.randrange(50)])
    if choice == 5:
        return rng.randbytes(rng.randrange(6))
    if choice == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(2))
    if choice == 7:
        return [random_primitive(rng, depth + 1) for _ in range(rng.randrange(5))]
    if choice == 8:  # something shaped like a descriptor
        return [rng.choice(["h", "g", "", 1]), rng.choice(["float32", "uint8", "bool", "int9", 3]),
                [rng.choice([0, 1, 2, 3, -1, 2**40, True]) for _ in range(rng.randrange(4))],
                rng.choice([True, False, 1, None])]
    return {rng.choice(["run", "src", "port", "tensors", "meta", "x", "error"]):
            random_primitive(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_header(rng: random.Random) -> dict:
    """A header map that is right in some keys and wrong in others."""
    header = {"run": "r", "src": "s", "port": "p", "tensors": [], "meta": {}}
    for key in rng.sample(list(header), rng.randrange(1, 4)):
        if rng.random() < 0.2:
            del header[key]
        elif key == "tensors":
            header[key] = [
                random_primitive(rng, 2) if rng.random() < 0.5 else
                [f"t{i}", rng.choice(["float32", "uint8", "bool"]), [rng.randrange(4)],
                 rng.random() < 0.7]
                for i in range(rng.randrange(4))
            ]
        else:
            header[key] = random_primitive(rng)
    return header


def mutate_bytes(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    op = rng.randrange(7)
    if op == 0 and data:  # flip bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif op == 1 and data:  # overwrite bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif op == 2:  # truncate
        del data[rng.randrange(len(data) + 1):]
    elif op == 3:  # extend
        data += rng.randbytes(rng.randint(1, 16))
    elif op == 4 and data:  # insert or delete in the middle
        i = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        else:
            del data[i:i + rng.randint(1, 8)]
    elif op == 5 and len(data) >= 32:  # a prefix field set to an edge value
        field = rng.choice([(2, "B"), (3, "B"), (4, "B"), (5, "B"), (6, "H"), (8, "q")])
        offset, code = field
        value = rng.choice([0, 1, 255] if code == "B" else [0, 1, 255, 65535 % (256 ** struct.calcsize(code))])
        struct.pack_into("<" + code, data, offset, value)
    elif op == 6 and len(data) > 40:  # a byte inside the header map only
        i = rng.randrange(32, min(len(data), 120))
        data[i] = rng.randrange(256)
    return bytes(data)


def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op <= 2:
            i = rng.randrange(len(frames))
            frames[i] = mutate_bytes(rng, frames[i])
        elif op == 3 and len(frames) > 1:
            del frames[rng.randrange(1, len(frames))]
        elif op == 4:
            frames.append(rng.randbytes(rng.randrange(64)))
        else:
            rng.shuffle(frames)
    return frames


def check(frames: list, limits: Limits, problems: set) -> None:
    try:
        msg = decode(frames, limits)
    except ProtocolError as exc:
        problems.add(" ".join(str(exc).split()[:2]))  # e.g. "bad magic", "unknown kind"
        return
    except Exception as exc:  # noqa: BLE001 - this is what the test exists to catch
        pytest.fail(f"decode raised {type(exc).__name__}: {exc} for frames {frames!r}")
    assert isinstance(msg, Message)
    for arr in msg.tensors.values():
        assert not arr.flags.writeable


def test_random_and_mutated_frames_raise_only_protocol_error() -> None:
    rng = random.Random(SEED)
    problems: set = set()
    seeds = corpus()
    count = 0
    for _ in range(4000):  # random frames, some with a plausible start
        n = rng.randint(1, 4)
        frames = [rng.randbytes(rng.randrange(120)) for _ in range(n)]
        if rng.random() < 0.5:
            frames[0] = b"SG\x01" + bytes([rng.randrange(2)]) + frames[0]
        check(frames, DEFAULT_LIMITS, problems)
        count += 1
    for _ in range(12000):  # valid messages, mutated
        frames = mutate(rng, rng.choice(seeds))
        check(frames, rng.choice([DEFAULT_LIMITS, TIGHT]), problems)
        count += 1
    for _ in range(4000):  # valid prefix, random header structure
        payload = rng.randbytes(rng.choice([0, 3, 8, 16]))
        frames = [craft(random_header(rng), payload, kind=rng.randrange(16))]
        frames += [rng.randbytes(rng.randrange(8)) for _ in range(rng.randrange(3))]
        check(frames, rng.choice([DEFAULT_LIMITS, TIGHT]), problems)
        count += 1
    assert count >= 10_000
    # The inputs reached many different checks, not just the magic at byte 0.
    assert len(problems) >= 12, sorted(problems)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_frames_raise_only_protocol_error(frames: list[bytes]) -> None:
    check(frames, DEFAULT_LIMITS, set())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255), st.integers(0, 255))
def test_arbitrary_header_bytes_raise_only_protocol_error(raw: bytes, kind: int, flags: int) -> None:
    check([craft(raw, b"", kind=kind, flags=flags)], DEFAULT_LIMITS, set())

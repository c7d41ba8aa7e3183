"""Helpers for protocol tests: build frame 0 by hand, byte by byte, as a foreign client would."""

import struct

import msgpack

PREFIX = struct.Struct("<2sBBBBHqqq")


def valid_header(**overrides: object) -> dict:
    """A header map for an ACT message with one inline float32 tensor of shape (2,)."""
    header = {
        "run": "r1",
        "src": "l1",
        "port": "in",
        "tensors": [["h", "float32", [2], True]],
        "meta": {},
    }
    header.update(overrides)
    return header


def craft(
    header: dict | bytes | None = None,
    payload: bytes = b"\x00\x00\x80\x3f\x00\x00\x00\xc0",
    *,
    kind: int = 4,
    major: int = 1,
    minor: int = 0,
    flags: int = 0,
    step: int = 7,
    tick: int = 7,
    ts: int = 1,
    hlen: int | None = None,
) -> bytes:
    """Frame 0 from parts: prefix, the map (a dict is msgpack-packed), zero pad to 8, payload."""
    raw = msgpack.packb(valid_header() if header is None else header) if not isinstance(
        header, bytes
    ) else header
    n = len(raw) if hlen is None else hlen
    head = PREFIX.pack(b"SG", major, minor, kind, flags, n, step, tick, ts) + raw
    pad = (-len(head)) % 8
    return head + bytes(pad) + payload

"""Decoding refuses every malformed message with a ProtocolError that names the problem."""

import msgpack
import numpy as np
import pytest
from synthgrad.protocol import (
    DEFAULT_LIMITS,
    Kind,
    Limits,
    Message,
    ProtocolError,
    decode,
    encode,
)

from .wirecraft import PREFIX, craft, valid_header

PAYLOAD = np.array([1.0, -2.0], dtype="<f4").tobytes()


def test_the_handcrafted_reference_message_is_valid() -> None:
    msg = decode([craft()])
    assert msg.kind is Kind.ACT and msg.src == "l1" and msg.port == "in" and msg.step == 7
    assert msg.tensors["h"].tolist() == [1.0, -2.0]


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ([], "no frames"),
        ([b""], "truncated frame 0: 0 bytes"),
        ([craft()[:31]], "truncated frame 0: 31 bytes"),
        ([b"XX" + craft()[2:]], "bad magic"),
        ([craft(major=2)], "incompatible major version 2.0"),
        ([craft(major=0)], "incompatible major version 0.0"),
        ([craft(flags=1)], "flags 0x01 set"),
        ([craft(kind=0)], "unknown kind code 0"),
        ([craft(kind=14)], "unknown kind code 14"),
        ([craft(kind=255)], "unknown kind code 255"),
        ([craft(hlen=60000)], "header map ends at"),
        ([None], "frame 0 is a NoneType, not a buffer"),
        ([12345], "frame 0 is a int, not a buffer"),
        ([memoryview(np.zeros((8, 8), np.uint8)[:, ::2])], "not a contiguous buffer"),
    ],
)
def test_bad_prefix_or_frames(frames: list, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode(frames)


def test_a_newer_minor_version_is_accepted_and_its_unknown_flags_ignored() -> None:
    msg = decode([craft(minor=3, flags=0x80)])
    assert msg.version == (1, 3)


def test_unknown_header_keys_and_descriptor_elements_are_ignored() -> None:
    header = valid_header(future="x", tensors=[["h", "float32", [2], True, {"new": 1}]])
    assert decode([craft(header)]).tensors["h"].tolist() == [1.0, -2.0]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"\xc1", "not valid msgpack"),
        (b"\x81\xa1", "not valid msgpack"),
        (msgpack.packb([1, 2]), "is a msgpack list, not a map"),
        (msgpack.packb({1: 2}), "not valid msgpack"),  # strict_map_key
        (msgpack.packb({"run": "r"}), "lacks the required key 'src'"),
        (valid_header(run=1), "'run' must be a str"),
        (valid_header(src=None), "'src' must be a str"),
        (valid_header(port=b"in"), "'port' must be a str"),
        (valid_header(tensors={}), "'tensors' must be an array"),
        (valid_header(meta=[]), "meta must be a map"),
        (valid_header(tensors=["h"]), "descriptor 0 must be"),
        (valid_header(tensors=[["h", "float32", [2]]]), "descriptor 0 must be"),
        (valid_header(tensors=[["", "float32", [2], True]]), "name must be a non-empty str"),
        (valid_header(tensors=[[1, "float32", [2], True]]), "name must be a non-empty str"),
        (valid_header(tensors=[["h", "uint16", [1], True]]), "'uint16' is not on the allow-list"),
        (valid_header(tensors=[["h", 5, [2], True]]), "5 is not on the allow-list"),
        (valid_header(tensors=[["h", "float32", 2, True]]), "shape must be an array"),
        (valid_header(tensors=[["h", "float32", [-2], True]]), "must hold uints"),
        (valid_header(tensors=[["h", "float32", [True, True], True]]), "must hold uints"),
        (valid_header(tensors=[["h", "float32", [2.0], True]]), "must hold uints"),
        (valid_header(tensors=[["h", "float32", [1] * 9, True]]), "9 dims, over the limit of 8"),
        (valid_header(tensors=[["h", "float32", [2], 1]]), "inline flag must be a bool"),
        (
            valid_header(tensors=[["h", "float32", [1], True], ["h", "float32", [1], True]]),
            "'h' appears twice",
        ),
        (valid_header(tensors=[[f"t{i}", "uint8", [0], True] for i in range(65)]), "65 tensors"),
        (valid_header(tensors=[["h", "float32", [2**40], False]]), "over the limit of 1073741824"),
        (
            valid_header(tensors=[["h", "float64", [2**62, 2**62, 2**62], False]]),
            "over the limit",
        ),
        (valid_header(meta={"t": msgpack.ExtType(5, b"x")}), "extension type 5"),
        (valid_header(meta={"t": msgpack.Timestamp(1)}), "Timestamp is not a msgpack primitive"),
        (valid_header(meta={b"k": 1}), "map key b'k' is not a str"),
    ],
)
def test_bad_header_map(header: dict | bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode([craft(header)])


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"deep": [[[1]]]}, "nests deeper than 3"),
        ({"many": list(range(20))}, "more than the limit"),
    ],
)
def test_meta_beyond_the_limits_is_refused(meta: dict, problem: str) -> None:
    limits = Limits(max_meta_depth=3, max_meta_items=16)
    with pytest.raises(ProtocolError, match=problem):
        decode([craft(valid_header(meta=meta))], limits)


def test_a_message_over_the_byte_limit_is_refused() -> None:
    header = valid_header(tensors=[[f"t{i}", "uint8", [2**29], False] for i in range(3)])
    with pytest.raises(ProtocolError, match="message would be .* over the limit"):
        decode([craft(header, b"")] + [b""] * 3)


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ([craft(payload=PAYLOAD[:7])], f"truncated frame 0: {len(craft()) - 1} bytes"),
        ([craft(payload=PAYLOAD + b"\x00")], f"oversized frame 0: {len(craft()) + 1} bytes"),
        ([craft(), PAYLOAD], "need 0 tensor frame"),
        (
            [craft(valid_header(tensors=[["h", "float32", [2], False]]), b"")],
            "need 1 tensor frame.* has 0",
        ),
        (
            [craft(valid_header(tensors=[["h", "float32", [2], False]]), b""), PAYLOAD[:4]],
            "frame 1 has 4 bytes, its descriptor says 8",
        ),
        ([craft(valid_header(tensors=[["h", "float32", [2], False]]), b""), None], "frame 1 is a"),
    ],
)
def test_descriptors_must_match_the_frames(frames: list, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode(frames)


def test_bool_bytes_other_than_zero_or_one_are_refused() -> None:
    header = valid_header(tensors=[["m", "bool", [3], True]])
    assert decode([craft(header, b"\x01\x00\x01")]).tensors["m"].tolist() == [True, False, True]
    with pytest.raises(ProtocolError, match="bool bytes must be 0 or 1"):
        decode([craft(header, b"\x01\x02\x01")])


@pytest.mark.parametrize(
    ("kind", "header", "problem"),
    [
        (Kind.ACT, valid_header(port=""), "ACT needs a non-empty destination port"),
        (Kind.GRAD, valid_header(src=""), "GRAD needs a non-empty src"),
        (Kind.CTX, valid_header(tensors=[]), "CTX needs at least one tensor"),
        (Kind.ERROR, valid_header(tensors=[]), r'ERROR needs meta\["error"\]'),
    ],
)
def test_kind_rules_are_enforced_when_decoding(kind: Kind, header: dict, problem: str) -> None:
    payload = b"" if not header["tensors"] else PAYLOAD
    with pytest.raises(ProtocolError, match=problem):
        decode([craft(header, payload, kind=kind)])


def test_kind_rules_hold_for_every_kind_sharing_a_cached_header() -> None:
    # A header cached while decoding HEARTBEATs must not let an ACT without port through.
    header = valid_header(port="", tensors=[])
    for _ in range(3):
        decode([craft(header, b"", kind=Kind.HEARTBEAT)])
    with pytest.raises(ProtocolError, match="ACT needs"):
        decode([craft(header, b"", kind=Kind.ACT)])


def test_limits_are_configurable() -> None:
    tight = Limits(max_tensors=1, max_dims=1, max_tensor_bytes=4, max_message_bytes=64)
    with pytest.raises(ProtocolError, match="over the limit of 4"):
        decode([craft()], tight)
    assert decode([craft()], DEFAULT_LIMITS).tensors["h"].shape == (2,)


def test_limits_must_be_positive_ints() -> None:
    with pytest.raises(ValueError, match="max_tensors must be a positive int"):
        Limits(max_tensors=0)


def test_the_decode_cache_stays_bounded() -> None:
    limits = Limits()
    for i in range(2000):
        decode([craft(valid_header(run=f"run-{i}"))], limits)
    assert len(limits.header_cache) <= 512


def test_message_with_meta_is_not_cached_and_gets_its_own_meta() -> None:
    limits = Limits()
    frames = encode(Message(Kind.METRICS, src="a", meta={"loss": [1.0]}))
    one, two = decode(frames, limits), decode(frames, limits)
    assert one.meta == two.meta == {"loss": [1.0]} and one.meta["loss"] is not two.meta["loss"]
    assert not limits.header_cache


def test_prefix_struct_matches_the_documented_layout() -> None:
    assert PREFIX.size == 32

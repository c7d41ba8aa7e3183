"""Encoding and decoding: round trips across kinds, dtypes, shapes and layouts."""

import array

import ml_dtypes
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthgrad.protocol import (
    DEFAULT_INLINE_THRESHOLD,
    PROTOCOL_VERSION,
    WIRE_DTYPES,
    Kind,
    Message,
    ProtocolError,
    decode,
    encode,
)
from synthgrad.protocol.kinds import LINK_KINDS
from synthgrad.protocol.limits import Limits

from .wirecraft import craft, valid_header

LINK_AND_CTX = LINK_KINDS | {Kind.CTX}
NEEDS_SRC = LINK_AND_CTX | {Kind.HELLO}


# ----------------------------------------------------------------------------- strategies

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
layouts = st.sampled_from(["contiguous", "transposed", "strided", "big-endian"])


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    """An array of an allowed dtype with arbitrary bits, in a layout that may need fixing."""
    dname = draw(st.sampled_from(list(WIRE_DTYPES)))
    dtype = WIRE_DTYPES[dname]
    shape = draw(shapes)
    layout = draw(layouts)
    if layout == "strided":
        shape = (shape[0] * 2, *shape[1:]) if shape else shape
    count = int(np.prod(shape)) if shape else 1
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if dname == "bool":
        arr = arr.view(np.uint8) % 2 == 1
    if layout == "transposed":
        arr = arr.T
    elif layout == "strided" and shape:
        arr = arr[::2]
    elif layout == "big-endian" and dtype.itemsize > 1 and dname != "bfloat16":
        arr = arr.astype(dtype.newbyteorder(">"))
    return arr


primitives = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
metas = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        primitives,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)
int64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """A valid message of any kind (kind rules satisfied)."""
    kind = draw(st.sampled_from(list(Kind)))
    tensor_names = draw(st.lists(names, unique=True, min_size=1 if kind in LINK_AND_CTX else 0, max_size=4))
    meta = draw(metas)
    if kind is Kind.ERROR:
        meta["error"] = draw(st.text(max_size=20))
    return Message(
        kind=kind,
        src=draw(names if kind in NEEDS_SRC else st.text(max_size=8)),
        port=draw(names if kind in LINK_KINDS else st.text(max_size=8)),
        step=draw(int64),
        tick=draw(int64),
        run=draw(st.text(max_size=12)),
        tensors={name: draw(tensors()) for name in tensor_names},
        meta=meta,
        ts=draw(int64.filter(bool)),
    )


def wire_bytes(arr: np.ndarray) -> bytes:
    """What the wire must carry for ``arr``: C order, little-endian."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).tobytes()


def as_received(frames: list) -> list:
    """The frames as another process receives them: independent bytes objects."""
    return [bytes(memoryview(f).cast("B")) for f in frames]


def assert_same(decoded: Message, sent: Message) -> None:
    for field in ("kind", "src", "port", "step", "tick", "run", "ts"):
        assert getattr(decoded, field) == getattr(sent, field), field
    assert decoded.version == PROTOCOL_VERSION
    assert msgpack.packb(decoded.meta) == msgpack.packb(sent.meta)
    assert list(decoded.tensors) == list(sent.tensors)
    for name, arr in sent.tensors.items():
        got = decoded.tensors[name]
        assert got.shape == arr.shape
        assert got.dtype == WIRE_DTYPES[[k for k, v in WIRE_DTYPES.items() if v == got.dtype][0]]
        assert got.tobytes() == wire_bytes(arr)
        assert not got.flags.writeable
        assert got.flags.aligned


# ----------------------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=messages(), threshold=st.sampled_from([0, 1, 64, DEFAULT_INLINE_THRESHOLD]))
def test_round_trip_preserves_every_field(msg: Message, threshold: int) -> None:
    frames = encode(msg, inline_threshold=threshold)
    assert_same(decode(frames), msg)
    assert_same(decode(as_received(frames)), msg)


@settings(max_examples=100, deadline=None)
@given(msg=messages())
def test_encoding_is_deterministic_and_canonical(msg: Message) -> None:
    first, second = encode(msg), encode(msg)
    assert as_received(first) == as_received(second)
    # Re-encoding what was decoded gives the same bytes: one canonical layout.
    assert as_received(encode(decode(first))) == as_received(first)


def test_zero_dim_tensor_round_trips() -> None:
    msg = Message(Kind.CTX, src="data", tensors={"y": np.array(3, dtype=np.int64)})
    out = decode(encode(msg)).tensors["y"]
    assert out.shape == () and out == 3


def test_empty_tensor_round_trips_inline_and_as_frame() -> None:
    empty = np.zeros((0, 3), dtype=np.float32)
    for threshold in (DEFAULT_INLINE_THRESHOLD, 0):
        msg = Message(Kind.ACT, src="a", port="in", tensors={"e": empty})
        out = decode(encode(msg, inline_threshold=threshold)).tensors["e"]
        assert out.shape == (0, 3) and out.dtype == np.float32


def test_non_contiguous_tensor_is_sent_in_c_order() -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    view = base.T[::2]
    out = decode(encode(Message(Kind.ACT, src="a", port="in", tensors={"v": view}))).tensors["v"]
    np.testing.assert_array_equal(out, view)


def test_big_endian_input_arrives_little_endian() -> None:
    arr = np.arange(5, dtype=">i4")
    out = decode(encode(Message(Kind.ACT, src="a", port="in", tensors={"x": arr}))).tensors["x"]
    assert out.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(out, np.arange(5))


def test_bfloat16_travels_as_ml_dtypes_bfloat16() -> None:
    arr = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    for threshold in (DEFAULT_INLINE_THRESHOLD, 0):
        msg = Message(Kind.GRAD, src="a", port="out", tensors={"g": arr})
        out = decode(encode(msg, inline_threshold=threshold)).tensors["g"]
        assert out.dtype == np.dtype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(out.astype(np.float32), [1.5, -2.0, 3.25])


def test_buffer_protocol_objects_are_accepted() -> None:
    msg = Message(
        Kind.ACT,
        src="a",
        port="in",
        tensors={
            "raw": b"\x01\x02",
            "floats": array.array("f", [1.0, 2.0]),
            "view": memoryview(np.arange(3, dtype=np.int16)),
        },
    )
    out = decode(encode(msg)).tensors
    assert out["raw"].dtype == np.uint8 and out["raw"].tolist() == [1, 2]
    assert out["floats"].dtype == np.float32 and out["floats"].tolist() == [1.0, 2.0]
    assert out["view"].dtype == np.int16 and out["view"].tolist() == [0, 1, 2]


def test_objects_with_array_interface_are_accepted() -> None:
    class TensorLike:  # what a CPU torch tensor looks like to numpy, without torch
        def __array__(self, dtype=None, copy=None):
            return np.ones(2, dtype=np.float32)

    out = decode(encode(Message(Kind.ACT, src="a", port="in", tensors={"t": TensorLike()})))
    assert out.tensors["t"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "complex64", "object", "U3", "datetime64[s]"])
def test_dtypes_off_the_allow_list_are_refused(dtype: str) -> None:
    arr = np.zeros(2, dtype=dtype)
    with pytest.raises(ProtocolError, match="allowed: float16, bfloat16"):
        encode(Message(Kind.ACT, src="a", port="in", tensors={"x": arr}))


def test_non_array_tensor_is_refused() -> None:
    with pytest.raises(ProtocolError, match="neither a numpy array nor a buffer"):
        encode(Message(Kind.ACT, src="a", port="in", tensors={"x": 3.0}))


def test_a_failing_array_conversion_is_a_protocol_error() -> None:
    class Broken:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("no data")

    with pytest.raises(ProtocolError, match="cannot view Broken as an array: no data"):
        encode(Message(Kind.ACT, src="a", port="in", tensors={"x": Broken()}))


# ----------------------------------------------------------------------------- framing


def test_small_tensors_travel_inside_frame_zero_and_big_ones_as_frames() -> None:
    small = np.ones(3, dtype=np.float32)
    big = np.ones(DEFAULT_INLINE_THRESHOLD // 4, dtype=np.float32)  # exactly the threshold
    frames = encode(Message(Kind.ACT, src="a", port="in", tensors={"s": small, "b": big, "t": small}))
    assert len(frames) == 2
    assert isinstance(frames[0], bytes)
    assert memoryview(frames[1]).nbytes == big.nbytes


def test_inline_tensors_start_eight_byte_aligned_with_zero_padding() -> None:
    parts = {"a": np.ones(3, np.uint8), "b": np.ones(1, np.float64), "c": np.ones(5, np.int8)}
    frame0 = encode(Message(Kind.ACT, src="a", port="in", tensors=parts))[0]
    hlen = int.from_bytes(frame0[6:8], "little")
    start = -(-(32 + hlen) // 8) * 8
    assert frame0[32 + hlen : start] == bytes(start - 32 - hlen)
    assert frame0[start : start + 3] == b"\x01\x01\x01"
    assert frame0[start + 3 : start + 8] == bytes(5)  # pad before the float64
    assert frame0[start + 8 : start + 16] == np.ones(1, np.float64).tobytes()
    assert len(frame0) == start + 16 + 5  # no pad after the last tensor


def test_decoded_tensors_view_the_received_buffers() -> None:
    big = np.arange(DEFAULT_INLINE_THRESHOLD, dtype=np.float32)
    small = np.arange(4, dtype=np.float32)
    frames = as_received(encode(Message(Kind.ACT, src="a", port="in", tensors={"b": big, "s": small})))
    out = decode(frames)
    assert np.shares_memory(out.tensors["b"], np.frombuffer(frames[1], np.uint8))
    assert np.shares_memory(out.tensors["s"], np.frombuffer(frames[0], np.uint8))


def test_decoded_tensors_are_read_only_even_from_writable_frames() -> None:
    frames = [bytearray(memoryview(f).cast("B")) for f in encode(
        Message(Kind.ACT, src="a", port="in", tensors={"x": np.zeros(4, np.float32)}),
        inline_threshold=0,
    )]
    out = decode(frames).tensors["x"]
    with pytest.raises(ValueError):
        out[0] = 1.0


def test_misaligned_frames_are_copied_to_aligned_arrays() -> None:
    frames = as_received(encode(
        Message(Kind.ACT, src="a", port="in", tensors={"x": np.arange(4, dtype=np.float64)}),
        inline_threshold=0,
    ))
    backing = bytearray(len(frames[1]) + 1)
    backing[1:] = frames[1]
    out = decode([frames[0], memoryview(backing)[1:]]).tensors["x"]
    assert out.flags.aligned and not out.flags.writeable
    assert out.tolist() == [0.0, 1.0, 2.0, 3.0]


# ----------------------------------------------------------------------------- fields


def test_zero_timestamp_is_stamped_on_the_wire_but_not_in_the_message() -> None:
    msg = Message(Kind.HEARTBEAT, src="a")
    out = decode(encode(msg))
    assert out.ts > 1_700_000_000 * 10**9
    assert msg.ts == 0


def test_an_int_kind_is_accepted_and_an_unknown_one_refused() -> None:
    assert decode(encode(Message(12))).kind is Kind.STOP
    with pytest.raises(ProtocolError, match="unknown kind 99"):
        encode(Message(99))


@pytest.mark.parametrize(
    ("msg", "problem"),
    [
        (Message(Kind.ACT, src="a", tensors={"x": np.zeros(1)}), "ACT needs a non-empty destination port"),
        (Message(Kind.GRAD, port="p", tensors={"x": np.zeros(1)}), "GRAD needs a non-empty src"),
        (Message(Kind.SYNTH_GRAD, src="a", port="p"), "SYNTH_GRAD needs at least one tensor"),
        (Message(Kind.CTX, src="a"), "CTX needs at least one tensor"),
        (Message(Kind.HELLO), "HELLO needs a non-empty src"),
        (Message(Kind.ERROR, src="a"), r'ERROR needs meta\["error"\]'),
    ],
)
def test_kind_rules_are_enforced_when_encoding(msg: Message, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        encode(msg)


def nested_lists(depth: int) -> list:
    value: list = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"x": np.int64(3)}, "int64 is not a msgpack primitive"),
        ({"x": {1: 2}}, "map key 1 is not a str"),
        ({"x": 2**64}, "does not fit"),
        ({"x": object()}, "object is not a msgpack primitive"),
        ({"x": nested_lists(32)}, "nests deeper than 32"),
        ({"x": list(range(70_000))}, "more than the limit"),
    ],
)
def test_meta_must_hold_primitives_within_limits(meta: dict, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        encode(Message(Kind.METRICS, src="a", meta=meta))


def test_meta_may_hold_numpy_floats_which_are_python_floats() -> None:
    out = decode(encode(Message(Kind.METRICS, src="a", meta={"loss": np.float64(0.5)})))
    assert out.meta == {"loss": 0.5} and type(out.meta["loss"]) is float


@pytest.mark.parametrize("field", ["step", "tick", "ts"])
def test_counters_must_fit_int64(field: str) -> None:
    msg = Message(Kind.HEARTBEAT, src="a")
    setattr(msg, field, 2**63)
    with pytest.raises(ProtocolError, match="int64"):
        encode(msg)


@pytest.mark.parametrize("field", ["run", "src", "port"])
def test_text_fields_must_be_str(field: str) -> None:
    msg = Message(Kind.HEARTBEAT, src="a")
    setattr(msg, field, b"bytes")
    with pytest.raises(ProtocolError, match=f"{field} must be a str"):
        encode(msg)


def test_decoded_meta_is_a_fresh_map_per_message() -> None:
    frames = as_received(encode(Message(Kind.HEARTBEAT, src="a")))
    first = decode(frames)
    first.meta["scribble"] = 1
    assert decode(frames).meta == {}


# ----------------------------------------------------------------------------- header maps by hand
# docs/PROTOCOL.md section 4: str keys only, each once, in every map; shape entries in any
# msgpack int format; ignored values bounded as meta is.  These maps are written byte by byte,
# as a client in another language might write them (msgpack ints are big-endian).


def packed_map(pairs: list) -> bytes:
    """A msgpack map from (key, value) pairs; a bytes value is taken as already packed."""
    assert len(pairs) < 16
    out = bytes([0x80 | len(pairs)])
    for key, value in pairs:
        out += msgpack.packb(key) + (value if isinstance(value, bytes) else msgpack.packb(value))
    return out


def header_pairs(shape: bytes = b"\x91\x02", meta: bytes = b"\x80", desc_extra: bytes = b"") -> list:
    """The pairs of the reference header (valid_header), with the shape array, meta and
    descriptor elements after the fourth given as packed bytes."""
    n = 4 + (1 if desc_extra else 0)
    desc = bytes([0x90 | n]) + msgpack.packb("h") + msgpack.packb("float32") + shape + b"\xc3" + desc_extra
    return [("run", "r1"), ("src", "l1"), ("port", "in"), ("tensors", b"\x91" + desc), ("meta", meta)]


@pytest.mark.parametrize(
    "two",
    [
        b"\x02",  # positive fixint
        b"\xcc\x02",  # uint 8
        b"\xcd\x00\x02",  # uint 16
        b"\xce\x00\x00\x00\x02",  # uint 32
        b"\xcf" + (2).to_bytes(8, "big"),  # uint 64
        b"\xd0\x02",  # int 8
        b"\xd1\x00\x02",  # int 16
        b"\xd2\x00\x00\x00\x02",  # int 32
        b"\xd3" + (2).to_bytes(8, "big"),  # int 64
    ],
)
def test_shape_entries_in_any_msgpack_int_format_decode_the_same(two: bytes) -> None:
    out = decode([craft(packed_map(header_pairs(shape=b"\x91" + two)))])
    assert out.tensors["h"].shape == (2,) and out.tensors["h"].tolist() == [1.0, -2.0]
    one_by_two = decode([craft(packed_map(header_pairs(shape=b"\x92\xcd\x00\x01" + two)))])
    assert one_by_two.tensors["h"].tolist() == [[1.0, -2.0]]


@pytest.mark.parametrize(
    "entry",
    [
        b"\xfe",  # negative fixint -2
        b"\xd0\xfe",  # int 8
        b"\xd1\xff\xfe",  # int 16
        b"\xd2\xff\xff\xff\xfe",  # int 32
        b"\xd3" + (-2).to_bytes(8, "big", signed=True),  # int 64
        b"\xca\x40\x00\x00\x00",  # float 32: 2.0
        b"\xc3",  # true
        b"\xc0",  # nil
        b"\xa1\x32",  # "2"
    ],
)
def test_shape_entries_that_are_not_non_negative_ints_are_refused(entry: bytes) -> None:
    with pytest.raises(ProtocolError, match="must hold uints"):
        decode([craft(packed_map(header_pairs(shape=b"\x91" + entry)))])


def test_an_empty_tensor_is_bounded_as_if_each_zero_were_one() -> None:
    empty = [["h", "float32", [0, 5], True]]
    assert decode([craft(valid_header(tensors=empty), b"")]).tensors["h"].shape == (0, 5)
    huge = b"\x92\x00\xcf" + (2**63).to_bytes(8, "big")  # [0, 2**63]: 0 bytes, no array holds it
    with pytest.raises(ProtocolError, match="counting each 0 as 1"):
        decode([craft(packed_map(header_pairs(shape=huge)), b"")])


@pytest.mark.parametrize(
    "pairs",
    [
        header_pairs() + [("run", "r2")],  # the header map
        header_pairs() + [("src", "l1")],  # even with the same value
        header_pairs(meta=packed_map([("a", 1), ("a", 2)])),  # meta
        header_pairs(meta=packed_map([("m", packed_map([("b", 1), ("b", 1)]))])),  # nested in meta
        header_pairs() + [("future", packed_map([("c", 1), ("c", 2)]))],  # an ignored value
        header_pairs(desc_extra=packed_map([("d", 1), ("d", 2)])),  # a descriptor's extra element
    ],
    ids=["header", "header-same-value", "meta", "nested", "unknown-key", "descriptor-extra"],
)
def test_repeated_map_keys_are_refused_anywhere(pairs: list) -> None:
    with pytest.raises(ProtocolError, match="appears twice"):
        decode([craft(packed_map(pairs))])


@pytest.mark.parametrize(
    "pairs",
    [
        header_pairs() + [(1, "x")],  # int key in the header map
        header_pairs() + [(None, "x")],  # nil key
        header_pairs() + [(1.5, "x")],  # float key
        header_pairs() + [(b"run", "r2")],  # bin key, even one that spells a known key
        header_pairs(meta=packed_map([(b"k", 1)])),
        header_pairs(meta=packed_map([("m", packed_map([(7, 1)]))])),
        header_pairs() + [("future", packed_map([(b"k", 1)]))],
    ],
    ids=["int", "nil", "float", "bin-header", "bin-meta", "int-nested", "bin-unknown-key"],
)
def test_non_str_map_keys_are_refused_anywhere(pairs: list) -> None:
    with pytest.raises(ProtocolError):
        decode([craft(packed_map(pairs))])


def nested_arrays(levels: int) -> bytes:
    """`levels` nested one-element arrays around a nil, packed."""
    return b"\x91" * levels + b"\xc0"


def test_ignored_values_nest_at_most_as_deep_as_meta() -> None:
    depth = Limits().max_meta_depth  # 32
    ok = decode([craft(packed_map(header_pairs() + [("future", nested_arrays(depth))]))])
    assert ok.tensors["h"].tolist() == [1.0, -2.0]
    for pairs in (
        header_pairs() + [("future", nested_arrays(depth + 1))],
        header_pairs(desc_extra=nested_arrays(depth + 1)),
        header_pairs(meta=packed_map([("m", nested_arrays(depth))])),  # meta is level 1
    ):
        with pytest.raises(ProtocolError, match=f"nests deeper than {depth} levels"):
            decode([craft(packed_map(pairs))])
    assert decode([craft(packed_map(header_pairs(desc_extra=nested_arrays(depth))))]).tensors


def test_the_depth_limit_follows_the_limits_and_never_the_descriptors() -> None:
    # A depth of 1 still admits tensors: descriptors are checked by their own rules.
    shallow = Limits(max_meta_depth=1)
    assert decode([craft(valid_header())], shallow).tensors["h"].tolist() == [1.0, -2.0]
    with pytest.raises(ProtocolError, match="nests deeper than 1 levels"):
        decode([craft(valid_header(future=[[1]]))], shallow)
    with pytest.raises(ProtocolError, match="nests deeper than 1 levels"):
        decode([craft(valid_header(meta={"a": [1]}))], shallow)


def test_a_parser_bomb_of_nesting_is_refused_quickly() -> None:
    # 60,000 nested arrays fit in a 64 KiB header; msgpack's own stack limit refuses them.
    with pytest.raises(ProtocolError):
        decode([craft(packed_map(header_pairs() + [("future", nested_arrays(60_000))]))])


@pytest.mark.parametrize(
    "value",
    [msgpack.Timestamp(1), msgpack.ExtType(5, b"x")],
    ids=["timestamp", "ext"],
)
def test_extension_types_are_refused_in_ignored_values_too(value: object) -> None:
    with pytest.raises(ProtocolError, match="extension type|not a msgpack primitive"):
        decode([craft(valid_header(future={"t": value}))])
    with pytest.raises(ProtocolError, match="extension type|not a msgpack primitive"):
        decode([craft(valid_header(tensors=[["h", "float32", [2], True, value]]))])


"""The msgpack header map of frame 0: packing it, and parsing and validating it.

The map holds the fields that repeat message after message (run, src, port, tensor
descriptors, meta), so both sides cache its result: see ``codec``.
"""

import struct

import msgpack

from .dtypes import WIRE_DTYPES
from .errors import ProtocolError
from .kinds import Kind, kind_problem
from .layout import ALIGN, MAGIC, MAX_HEADER_BYTES, PREFIX_SIZE, PROTOCOL_VERSION, align
from .limits import DEFAULT_LIMITS, Limits
from .meta import check_meta, check_value, unique_str_keys

_KEYS = ("run", "src", "port", "tensors", "meta")
_ZEROS = bytes(ALIGN)
# The first 8 bytes of frame 0 (magic, version, kind, flags, header length) depend only on
# what the header cache is keyed by, so they are packed once with the map.
_PACK_HEAD = struct.Struct("<2sBBBBH").pack


def pack_header(
    kind: Kind, run: str, src: str, port: str, descs: list, meta: dict
) -> tuple[bytes, bytes]:
    """Validate the repeating fields of a message and pack them.

    Args:
        descs: (name, dtype name, shape, inline) per tensor, in frame order.

    Returns:
        (the first 8 bytes of frame 0, the map followed by its zero padding to 8).

    Raises:
        ProtocolError: a field has the wrong type, the kind's rules are broken, meta holds
            a non-primitive, or the map exceeds 65535 bytes.
    """
    for field_name, value in (("run", run), ("src", src), ("port", port)):
        if not isinstance(value, str):
            raise ProtocolError(f"{field_name} must be a str, got {type(value).__name__}")
    wire_descs = []
    for name, dname, shape, inline in descs:
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"tensor names must be non-empty str, got {name!r}")
        wire_descs.append([name, dname, list(shape), inline])
    check_meta(meta, DEFAULT_LIMITS)
    problem = kind_problem(kind, src, port, len(descs), meta)
    if problem:
        raise ProtocolError(problem)
    try:
        packed = msgpack.packb(
            {"run": run, "src": src, "port": port, "tensors": wire_descs, "meta": meta},
            use_bin_type=True,
        )
    except Exception as exc:  # e.g. a str with lone surrogates, which UTF-8 cannot encode
        raise ProtocolError(f"header cannot be packed: {exc}") from exc
    hlen = len(packed)
    if hlen > MAX_HEADER_BYTES:
        raise ProtocolError(f"header map is {hlen} bytes; the limit is {MAX_HEADER_BYTES}")
    pad = align(PREFIX_SIZE + hlen) - (PREFIX_SIZE + hlen)
    major, minor = PROTOCOL_VERSION
    return _PACK_HEAD(MAGIC, major, minor, kind.value, 0, hlen), packed + _ZEROS[:pad]


class Header:
    """A validated header map and the frame layout it implies (what the decoder caches).

    Attributes:
        run, src, port: as on the wire.
        specs: per tensor (name, dtype, shape for reshape or None when 1-D, frame index
            (0 = inline in frame 0), byte offset in frame 0, element count, byte count).
        frame0_len: the exact length frame 0 must have.
        n_frames: the exact number of frames the message must have.
        meta: the meta map, or None when empty.
        ok_kinds: kinds already checked against this header's fields (cached headers only).
    """

    __slots__ = ("run", "src", "port", "specs", "frame0_len", "n_frames", "meta", "ok_kinds")

    def __init__(self, run, src, port, specs, frame0_len, n_frames, meta):  # noqa: D107
        self.run = run
        self.src = src
        self.port = port
        self.specs = specs
        self.frame0_len = frame0_len
        self.n_frames = n_frames
        self.meta = meta
        self.ok_kinds: set = set()


def _no_ext(code: int, data: bytes) -> None:
    raise ProtocolError(f"header holds msgpack extension type {code}; only primitives may travel")


def parse_header(raw: bytes, limits: Limits) -> Header:
    """Unpack and validate the header map ``raw``; compute the canonical frame layout.

    Every map in the header, at any depth, has str keys (an int key fails msgpack's
    ``strict_map_key``, a bin key ``unique_str_keys``), each at most once.  The values of
    unknown keys and the descriptor elements after the fourth are ignored, but checked as
    meta values are (primitives, ``limits.max_meta_depth``), so that no part of a valid
    header nests deeper than 3 + ``max_meta_depth`` levels.

    Raises:
        ProtocolError: not a msgpack map, a non-str or repeated map key, a required key
            missing or mistyped, a descriptor invalid or beyond ``limits``, or meta (or an
            ignored value) not primitives within the meta limits.
    """
    try:
        # Defaults build nothing but primitives; the ext hook refuses extension types
        # (timestamps arrive as msgpack.Timestamp and fail the primitive checks instead).
        # msgpack bounds every length by len(raw), and raw is at most 64 KiB; its C
        # unpacker refuses nesting beyond 1024 levels (StackError) before any check here.
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            ext_hook=_no_ext,
            object_pairs_hook=unique_str_keys,
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(
            f"header map is not valid msgpack ({type(exc).__name__}: {exc})"
        ) from None
    if type(header) is not dict:
        raise ProtocolError(f"header is a msgpack {type(header).__name__}, not a map")
    for key in _KEYS:
        if key not in header:
            raise ProtocolError(f"header map lacks the required key {key!r}")
    run, src, port, descs, meta = (header[k] for k in _KEYS)
    for key, value in (("run", run), ("src", src), ("port", port)):
        if type(value) is not str:
            raise ProtocolError(f"header {key!r} must be a str, got {type(value).__name__}")
    if type(descs) is not list:
        raise ProtocolError(f"header 'tensors' must be an array, got {type(descs).__name__}")
    if len(descs) > limits.max_tensors:
        raise ProtocolError(f"{len(descs)} tensors exceed the limit of {limits.max_tensors}")
    check_meta(meta, limits)
    if len(header) != len(_KEYS):
        for key, value in header.items():
            if key not in _KEYS:  # a later minor's key: ignored, but bounded as meta is
                check_value(value, f"header[{key!r}]", limits)

    specs = []
    seen = set()
    offset = align(PREFIX_SIZE + len(raw))
    index = 0
    big_bytes = 0
    for i, desc in enumerate(descs):
        name, dtype, shape, inline = _check_descriptor(i, desc, limits)
        if name in seen:
            raise ProtocolError(f"tensor name {name!r} appears twice")
        seen.add(name)
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * dtype.itemsize
        if nbytes > limits.max_tensor_bytes:
            raise ProtocolError(
                f"tensor {name!r} is {nbytes} bytes, over the limit of {limits.max_tensor_bytes}"
            )
        if not count and shape:
            # An empty tensor is still bounded, as if each 0 were a 1, so that no dimension
            # is too large for an array to hold (numpy refuses dimensions beyond intp).
            span = dtype.itemsize
            for dim in shape:
                span *= dim or 1
            if span > limits.max_tensor_bytes:
                raise ProtocolError(
                    f"tensor {name!r} has shape {shape!r}: counting each 0 as 1 it would be "
                    f"{span} bytes, over the limit of {limits.max_tensor_bytes}"
                )
        view_shape = None if len(shape) == 1 else tuple(shape)
        if inline:
            offset = align(offset)
            specs.append((name, dtype, view_shape, 0, offset, count, nbytes))
            offset += nbytes
        else:
            index += 1
            big_bytes += nbytes
            specs.append((name, dtype, view_shape, index, 0, count, nbytes))
    if offset + big_bytes > limits.max_message_bytes:
        raise ProtocolError(
            f"message would be {offset + big_bytes} bytes, over the limit of "
            f"{limits.max_message_bytes}"
        )
    # Frame 0 ends where the last inline tensor ends (after the pad when none is inline).
    return Header(run, src, port, tuple(specs), offset, 1 + index, meta or None)


def _check_descriptor(i: int, desc: object, limits: Limits) -> tuple:
    if type(desc) is not list or len(desc) < 4:
        raise ProtocolError(f"tensor descriptor {i} must be [name, dtype, shape, inline]")
    name, dtype_name, shape, inline = desc[:4]  # later elements: a future minor's, ignored
    for j in range(4, len(desc)):
        check_value(desc[j], f"tensor descriptor {i} element {j}", limits)
    if type(name) is not str or not name:
        raise ProtocolError(f"tensor descriptor {i}: name must be a non-empty str")
    dtype = WIRE_DTYPES.get(dtype_name) if type(dtype_name) is str else None
    if dtype is None:
        raise ProtocolError(f"tensor {name!r}: dtype {dtype_name!r} is not on the allow-list")
    if type(shape) is not list:
        raise ProtocolError(f"tensor {name!r}: shape must be an array of uints")
    if len(shape) > limits.max_dims:
        raise ProtocolError(
            f"tensor {name!r} has {len(shape)} dims, over the limit of {limits.max_dims}"
        )
    for dim in shape:  # any msgpack int format (fixint, uint8..uint64, int8..int64)
        if type(dim) is not int or dim < 0:
            raise ProtocolError(f"tensor {name!r}: shape {shape!r} must hold uints")
    if type(inline) is not bool:
        raise ProtocolError(f"tensor {name!r}: inline flag must be a bool")
    return name, dtype, shape, inline

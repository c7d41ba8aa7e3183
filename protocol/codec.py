"""Encoding a ``Message`` to frames and decoding frames back, validating everything.

Layout (docs/PROTOCOL.md gives byte offsets):

    frame 0:  32-byte prefix | msgpack header map (H bytes) | zero pad to 8 |
              inline tensor | pad to 8 | inline tensor | ...   (no pad after the last)
    frame k:  the bytes of the k-th non-inline tensor, exactly, for k = 1..n

Small messages are one frame because pyzmq costs about five times more per multipart
message; big tensors travel as frames of their own so that neither side copies them.

Both directions cache the header map: the encoder by (kind, run, src, port, descriptors),
the decoder by the map's bytes, each only when ``meta`` is empty (the steady stream of
activations and gradients).  A cached decode skips msgpack and all header validation; what
remains per message is the fixed prefix, the frame sizes and one numpy view per tensor.
This per-message path is written flat, with locals, because at 64-byte messages every
100 ns is about 5% of the throughput.
"""

import sys
import time
from collections.abc import Sequence

import numpy as np

from .dtypes import NAME_BY_DTYPE, WIRE_DTYPES, to_wire_array
from .errors import ProtocolError
from .header import Header, pack_header, parse_header
from .kinds import KIND_BY_CODE, Kind, kind_problem
from .layout import ALIGN, KNOWN_FLAGS, MAGIC, PREFIX, PREFIX_SIZE, PROTOCOL_VERSION
from .limits import DEFAULT_LIMITS, Limits
from .message import Message

#: Tensors smaller than this many bytes travel inside frame 0 (copied once into it); the
#: rest travel as frames of their own, zero-copy.  From benchmarks/wire.py on this machine:
#: below about 64 KiB a zero-copy frame costs more (pyzmq's per-frame bookkeeping and its
#: garbage-collection thread) than copying the bytes.
DEFAULT_INLINE_THRESHOLD = 64 * 1024

_MAJOR, _MINOR = PROTOCOL_VERSION
_UNPACK_PREFIX = PREFIX.unpack_from
_PACK_COUNTERS = PREFIX.__class__("<qqq").pack  # step, tick, ts: bytes 8..31 of frame 0
_DTYPE_NAME = NAME_BY_DTYPE.get
_ZEROS = bytes(ALIGN)
_U8 = np.dtype(np.uint8)
_BOOL = WIRE_DTYPES["bool"]
_MASK = ALIGN - 1
# On CPython a bytes object's data starts 32 bytes into a 16-byte-aligned allocation, so
# an inline tensor (at a multiple of 8 in frame 0) received as bytes is always aligned and
# its alignment need not be checked per message.  Elsewhere, check.
_BYTES_ALIGNED = sys.implementation.name == "cpython" and (bytes.__basicsize__ - 1) % ALIGN == 0

# Caches are bounded by entry count and hold only small headers, so a peer that sends
# ever-new headers costs at most about _CACHE_ENTRIES * _CACHE_MAX_HEADER bytes.
_CACHE_ENTRIES = 512
_CACHE_MAX_HEADER = 2048
_encode_cache: dict = {}


def encode(msg: Message, inline_threshold: int = DEFAULT_INLINE_THRESHOLD) -> list:
    """Encode ``msg`` into the frames of one ZeroMQ multipart message.

    Args:
        msg: the message.  Tensors must be of an allowed dtype; non-contiguous or big-endian
            ones are copied into wire form.
        inline_threshold: tensors with fewer bytes travel inside frame 0.

    Returns:
        ``[frame0, *tensor_frames]``: frame 0 is ``bytes``; each further frame is a uint8
        ndarray viewing the tensor's memory (or its contiguous copy), to be sent with
        ``copy=False``.  Do not modify those tensors afterwards: libzmq reads them from its
        I/O thread at some later moment.

    Raises:
        ProtocolError: the message could not be decoded by a conforming receiver (kind
            rules, dtype, field types, int64 ranges, meta contents, header over 64 KiB).
    """
    kind = msg.kind
    if type(kind) is not Kind:
        kind = _as_kind(kind)
    meta = msg.meta

    parts: list = [b"", b"", b""]  # head, counters, header map: filled in below
    frames = None
    descs = []
    rel = 0  # offset from the start of the inline area, which is itself 8-aligned
    for name, arr in msg.tensors.items():
        # The common case inline: a contiguous little-endian array of an allowed dtype.
        dname = _DTYPE_NAME(arr.dtype) if type(arr) is np.ndarray else None
        if dname is None or not arr.flags.c_contiguous:
            arr, dname = to_wire_array(arr, name)
        nbytes = arr.nbytes
        if nbytes < inline_threshold:
            if rel & _MASK:
                pad = ALIGN - (rel & _MASK)
                parts.append(_ZEROS[:pad])
                rel += pad
            parts.append(arr)
            rel += nbytes
            descs.append((name, dname, arr.shape, True))
        else:
            if frames is None:
                frames = [None]
            # A uint8 view exports a plain byte buffer for every dtype (bfloat16 has no
            # buffer-protocol format code), and keeps the array alive while zmq holds it.
            frames.append(arr.reshape(-1).view(_U8))
            descs.append((name, dname, arr.shape, False))

    if meta or type(meta) is not dict:
        head, header = pack_header(kind, msg.run, msg.src, msg.port, descs, meta)
    else:
        # Keyed by everything the head and map depend on, kind included, so that a hit also
        # skips the kind rules: they were checked when the entry was made.
        key = (kind, msg.run, msg.src, msg.port, tuple(descs))
        try:
            cached = _encode_cache.get(key)
        except TypeError:  # an unhashable field; pack_header names it
            cached = None
        if cached is None:
            cached = pack_header(kind, msg.run, msg.src, msg.port, descs, meta)
            if len(cached[1]) <= _CACHE_MAX_HEADER:
                if len(_encode_cache) >= _CACHE_ENTRIES:
                    _encode_cache.clear()
                _encode_cache[key] = cached
        head, header = cached

    try:
        parts[1] = _PACK_COUNTERS(msg.step, msg.tick, msg.ts or time.time_ns())
    except Exception as exc:  # struct.error: not an int, or outside int64
        raise ProtocolError(
            f"step, tick and ts must be int64; got {msg.step!r}, {msg.tick!r}, {msg.ts!r}"
        ) from exc
    parts[0] = head
    parts[2] = header
    frame0 = b"".join(parts)
    if frames is None:
        return [frame0]
    frames[0] = frame0
    return frames


def _as_kind(kind: object) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown kind {kind!r}") from None


def decode(frames: Sequence, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and validate the frames of one message.

    Args:
        frames: the frames in order: ``bytes``, ``bytearray``, ``memoryview``, ``zmq.Frame``
            or anything else exposing a contiguous buffer.
        limits: bounds on what the message may claim.

    Returns:
        The message.  Its tensors are read-only arrays viewing the frames (no copy; an
        inline tensor views frame 0), so they keep those buffers alive.  The one exception
        is a tensor whose buffer is misaligned for its dtype, which is copied.

    Raises:
        ProtocolError: for anything wrong with the bytes, and for nothing else.
    """
    try:
        nframes = len(frames)
        if not nframes:
            raise ProtocolError("empty message: no frames")
        f0 = frames[0]
        if type(f0) is not bytes:
            f0 = _byte_view(f0, 0)
        n0 = len(f0)
        if n0 < PREFIX_SIZE:
            raise ProtocolError(f"truncated frame 0: {n0} bytes, less than the 32-byte prefix")
        magic, major, minor, code, flags, hlen, step, tick, ts = _UNPACK_PREFIX(f0)
        if magic != MAGIC:
            raise ProtocolError(f"bad magic {magic!r} (expected b'SG'): not a synthgrad message")
        if major != _MAJOR:
            raise ProtocolError(
                f"incompatible major version {major}.{minor}; this decoder speaks {_MAJOR}.x"
            )
        if flags & ~KNOWN_FLAGS and minor <= _MINOR:
            raise ProtocolError(f"flags 0x{flags:02x} set; version {major}.{minor} defines none")
        kind = KIND_BY_CODE[code]
        if kind is None:
            raise ProtocolError(f"unknown kind code {code}")
        end = PREFIX_SIZE + hlen
        if n0 < end:
            raise ProtocolError(f"truncated frame 0: {n0} bytes, the header map ends at {end}")

        raw = f0[PREFIX_SIZE:end]
        if type(raw) is not bytes:
            raw = bytes(raw)
        cache = limits.header_cache
        header: Header | None = cache.get(raw)
        if header is None:
            header = parse_header(raw, limits)
            if header.meta is None and hlen <= _CACHE_MAX_HEADER:
                if len(cache) >= _CACHE_ENTRIES:
                    cache.clear()
                cache[raw] = header
        specs = header.specs
        if n0 != header.frame0_len:
            raise ProtocolError(
                f"{'truncated' if n0 < header.frame0_len else 'oversized'} frame 0: {n0} "
                f"bytes, but its header and inline descriptors lay out {header.frame0_len}"
            )
        if nframes != header.n_frames:
            raise ProtocolError(
                f"descriptors need {header.n_frames - 1} tensor frame(s) after frame 0, "
                f"the message has {nframes - 1}"
            )
        meta = header.meta
        if meta is None:
            meta = {}  # a fresh map per message: the receiver may modify it
            if kind not in header.ok_kinds:
                problem = kind_problem(kind, header.src, header.port, len(specs), meta)
                if problem:
                    raise ProtocolError(problem)
                header.ok_kinds.add(kind)
        else:
            problem = kind_problem(kind, header.src, header.port, len(specs), meta)
            if problem:
                raise ProtocolError(problem)

        tensors = {}
        for name, dtype, shape, index, offset, count, nbytes in specs:
            if index:
                buf = frames[index]
                if type(buf) is not bytes:
                    buf = _byte_view(buf, index)
                if len(buf) != nbytes:
                    raise ProtocolError(
                        f"tensor {name!r}: frame {index} has {len(buf)} bytes, "
                        f"its descriptor says {nbytes}"
                    )
                arr = np.frombuffer(buf, dtype, count)
            else:
                buf = f0
                arr = np.frombuffer(f0, dtype, count, offset)
            if shape is not None:
                arr = arr.reshape(shape)
            if type(buf) is not bytes:
                arr.flags.writeable = False
                if not arr.flags.aligned:  # numpy and torch kernels want aligned data
                    arr = arr.copy()
                    arr.flags.writeable = False
            elif not _BYTES_ALIGNED and not arr.flags.aligned:
                arr = arr.copy()
                arr.flags.writeable = False
            if dtype is _BOOL and count and arr.view(_U8).max() > 1:
                raise ProtocolError(f"tensor {name!r}: bool bytes must be 0 or 1")
            tensors[name] = arr

        return Message(
            kind,
            header.src,
            header.port,
            step,
            tick,
            header.run,
            tensors,
            meta,
            ts,
            PROTOCOL_VERSION if minor == _MINOR else (major, minor),
        )
    except ProtocolError:
        raise
    except Exception as exc:
        # The checks above should catch every malformation; this net makes "only
        # ProtocolError, whatever the bytes" hold even for a case they miss.
        raise ProtocolError(f"malformed message ({type(exc).__name__}: {exc})") from exc


def _byte_view(obj: object, index: int) -> memoryview:
    """A flat byte view of a frame, without copying."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise ProtocolError(f"frame {index} is a {type(obj).__name__}, not a buffer") from None
    if not view.c_contiguous:
        raise ProtocolError(f"frame {index} is not a contiguous buffer")
    if view.ndim != 1 or view.itemsize != 1 or view.format != "B":
        view = view.cast("B")
    return view

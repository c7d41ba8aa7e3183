"""Fixed facts of the frame layout: version, magic, the 32-byte prefix of frame 0, alignment.

Frame 0 starts with a fixed little-endian prefix rather than a msgpack field for every
per-message value, because msgpack costs about a microsecond each way per message and the
per-message fields (kind, step, tick, timestamp) change every time; the fields that repeat
(run, source, port, tensor descriptors) follow as a msgpack map that both sides cache by its
bytes.  See docs/PROTOCOL.md, "Frame 0".
"""

import struct

#: (major, minor) of the protocol this package speaks.  Receivers accept any minor of their
#: major: a minor release may only add things an older receiver can ignore.
PROTOCOL_VERSION: tuple[int, int] = (1, 0)

MAGIC = b"SG"

#: magic, major u8, minor u8, kind u8, flags u8, header length u16, step i64, tick i64, ts i64
PREFIX = struct.Struct("<2sBBBBHqqq")
PREFIX_SIZE = PREFIX.size  # 32

#: Inline tensors start at multiples of this from the start of frame 0, so that a float64
#: view of a received buffer is aligned.
ALIGN = 8

#: The header length field is a u16.
MAX_HEADER_BYTES = 0xFFFF

#: Flag bits defined by version 1.0 (none).  See PROTOCOL.md "Versioning" for the rule.
KNOWN_FLAGS = 0x00

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def align(n: int) -> int:
    """Round ``n`` up to the next multiple of ``ALIGN``."""
    return (n + ALIGN - 1) & -ALIGN

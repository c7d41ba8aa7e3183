"""Receiver-side limits on what a message may claim, so that hostile bytes cost little."""

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    """Bounds a decoder enforces; anything beyond them is a ``ProtocolError``.

    Sockets made by this package also pass ``max_message_bytes`` to libzmq as
    ``ZMQ_MAXMSGSIZE`` (a bound per frame), so libzmq drops the connection of a peer that
    sends a larger frame before it is ever allocated here.

    Attributes:
        max_tensors: tensors in one message.
        max_dims: dimensions of one tensor.
        max_tensor_bytes: bytes of one tensor.
        max_message_bytes: bytes of all frames of one message together.
        max_meta_depth: nesting of ``meta``; the ``meta`` map itself is depth 1.
        max_meta_items: values in ``meta``, counting containers and map keys' values.
    """

    max_tensors: int = 64
    max_dims: int = 8
    max_tensor_bytes: int = 1 << 30
    max_message_bytes: int = 1 << 30
    # Control messages carry configuration in meta (a WELCOME holds an agent's whole spec),
    # so these are generous; the 64 KiB header map bounds the work of checking meta anyway.
    max_meta_depth: int = 32
    max_meta_items: int = 65536

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive int, got {value!r}")
        # Each Limits carries its own cache of validated headers (see codec.decode): what is
        # valid depends on the limits, and an attribute lookup is cheaper per message than
        # hashing the limits into a shared cache key.
        object.__setattr__(self, "header_cache", {})


#: The limits ``decode`` and ``recv_message`` use unless given others.
DEFAULT_LIMITS = Limits()

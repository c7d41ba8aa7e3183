"""synthgrad's wire protocol: message model, codec, sockets and endpoints.

Torch-free: tensors are numpy arrays (or anything exposing the buffer protocol).  The
language-neutral specification is docs/PROTOCOL.md.

Sending and receiving::

    from synthgrad import protocol as P

    ctx = P.new_context()
    ns = P.IpcNamespace()
    pull, endpoint = P.bind_pull(ctx, ns.endpoint("layer2"))
    push = P.connect_push(ctx, endpoint)
    P.send_message(push, P.Message(P.Kind.ACT, src="layer1", port="in", step=7,
                                   tensors={"h": activations}))
    msg = P.recv_message(pull, timeout_ms=1000)   # None on timeout; ProtocolError if bad
"""

from .codec import DEFAULT_INLINE_THRESHOLD, decode, encode
from .dtypes import WIRE_DTYPES
from .endpoints import MAX_IPC_PATH_BYTES, IpcNamespace, tcp_endpoint
from .errors import ProtocolError
from .kinds import Kind
from .layout import PROTOCOL_VERSION
from .limits import DEFAULT_LIMITS, Limits
from .message import Message
from .sockets import (
    DEFAULT_HWM,
    CurveKeys,
    bind_pull,
    bind_router,
    connect_dealer,
    connect_push,
    new_context,
)
from .transport import recv_message, recv_routed, send_message, send_routed

__all__ = [
    "DEFAULT_HWM",
    "DEFAULT_INLINE_THRESHOLD",
    "DEFAULT_LIMITS",
    "MAX_IPC_PATH_BYTES",
    "PROTOCOL_VERSION",
    "WIRE_DTYPES",
    "CurveKeys",
    "IpcNamespace",
    "Kind",
    "Limits",
    "Message",
    "ProtocolError",
    "bind_pull",
    "bind_router",
    "connect_dealer",
    "connect_push",
    "decode",
    "encode",
    "new_context",
    "recv_message",
    "recv_routed",
    "send_message",
    "send_routed",
    "tcp_endpoint",
]

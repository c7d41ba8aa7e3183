"""Sending and receiving messages on ZeroMQ sockets.

One frame for small messages; ``copy=False`` for tensor frames, so neither side copies a big
tensor.  Every frame is received as a ``zmq.Frame`` (``copy=False``) because its ``more``
attribute is free, whereas asking the socket for ``RCVMORE`` costs about 1 us in pyzmq 27 (it
builds an enum per call): more than a whole copying receive of a small frame.  (The cost per
small message, measured in one process: recv(copy=True) + RCVMORE 1.8-2.1 us, recv(copy=False)
+ .more + .bytes 1.3 us.)  Frame 0
is then copied into ``bytes`` when small (cheap, and inline tensors then view an aligned,
immutable buffer) and viewed in place when large (a sender may inline big tensors); tensor
frames are always viewed in place (zero-copy).
"""

import time

import zmq

from .codec import DEFAULT_INLINE_THRESHOLD, decode, encode
from .errors import ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .message import Message

_NOBLOCK = zmq.NOBLOCK
_SNDMORE = zmq.SNDMORE
_POLLIN = zmq.POLLIN
# Frame 0 this big or bigger is viewed in place rather than copied into bytes.
_VIEW_FRAME0_FROM = 16 * 1024


def _frame0(frame: zmq.Frame) -> bytes | zmq.Frame:
    return frame.bytes if len(frame) < _VIEW_FRAME0_FROM else frame


def send_message(
    sock: zmq.Socket,
    msg: Message,
    flags: int = 0,
    *,
    inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
) -> None:
    """Encode ``msg`` and send it on ``sock`` (PUSH, DEALER, PAIR...).

    With ``flags=zmq.NOBLOCK`` a full queue raises ``zmq.Again`` and nothing is sent: only
    the first frame can block, since libzmq accepts the remaining frames of a message once
    it has accepted the first.

    Tensors sent as separate frames (``inline_threshold`` bytes and more) are not copied:
    libzmq reads them later from its I/O thread, so do not modify them after this call.

    Raises:
        ProtocolError: the message is invalid (see ``encode``); nothing is sent.
        zmq.Again: NOBLOCK and the queue is full; nothing is sent.
    """
    frames = encode(msg, inline_threshold)
    if len(frames) == 1:
        sock.send(frames[0], flags)
    else:
        sock.send_multipart(frames, flags, copy=False)


def recv_message(
    sock: zmq.Socket, timeout_ms: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> Message | None:
    """Receive and decode one message from ``sock``.

    Args:
        sock: a PULL, DEALER, PAIR... socket (for a ROUTER use ``recv_routed``).
        timeout_ms: None blocks (until the socket's own ``RCVTIMEO``, if set); 0 polls once;
            otherwise wait at most this long.
        limits: what the message may claim.

    Returns:
        The message, or None when nothing arrived in time.

    Raises:
        ProtocolError: the message is malformed.  All its frames have been consumed, so the
            next call sees the next message.
    """
    first = _recv_first(sock, timeout_ms)
    if first is None:
        return None
    if first.more:
        return decode(_recv_rest(sock, _frame0(first), limits), limits)
    return decode((_frame0(first),), limits)


def recv_message_with_user(
    sock: zmq.Socket, timeout_ms: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, Message] | None:
    """As ``recv_message``, with the ``User-Id`` of the connection it came by.

    On a CURVE server whose ZAP handler accepted the peer (protocol/curve.py) that is the
    Z85 text of the peer's public key, set by libzmq on every frame, so the peer cannot
    forge it; "" where no ZAP handler named one (plain ipc, or a client socket).  A separate
    function so that ``recv_message``, the hot path of ipc runs, pays nothing for it
    (reading the property costs about 0.5 us).

    Returns:
        ``(user_id, message)``, or None when nothing arrived in time.

    Raises:
        ProtocolError: as ``recv_message``.
    """
    first = _recv_first(sock, timeout_ms)
    if first is None:
        return None
    user = _user_id(first)
    if first.more:
        return user, decode(_recv_rest(sock, _frame0(first), limits), limits)
    return user, decode((_frame0(first),), limits)


def _user_id(frame: zmq.Frame) -> str:
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP handler gave this connection a User-Id
        return ""


def send_routed(
    sock: zmq.Socket,
    identity: bytes,
    msg: Message,
    flags: int = 0,
    *,
    inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
) -> None:
    """Send ``msg`` from a ROUTER to the peer whose identity is ``identity``.

    Sockets from ``bind_router`` set ``ROUTER_MANDATORY``, so an unknown identity raises
    ``zmq.ZMQError`` (EHOSTUNREACH) instead of dropping the message silently.
    """
    frames = encode(msg, inline_threshold)
    sock.send(identity, flags | _SNDMORE)
    if len(frames) == 1:
        sock.send(frames[0], flags)
    else:
        sock.send_multipart(frames, flags, copy=False)


def recv_routed(
    sock: zmq.Socket, timeout_ms: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes, Message] | None:
    """Receive one message on a ROUTER: ``(identity of the sender, message)``, or None.

    Timeouts and errors as ``recv_message``; a ``ProtocolError`` names the identity.
    """
    got = recv_routed_with_user(sock, timeout_ms, limits)
    return None if got is None else (got[0], got[2])


def recv_routed_with_user(
    sock: zmq.Socket, timeout_ms: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes, str, Message] | None:
    """As ``recv_routed``: ``(identity, user_id, message)``, or None.

    ``user_id`` as in ``recv_message_with_user``: on a CURVE ROUTER, the Z85 public key the
    ZAP handler accepted for this connection, so the orchestrator can tell whether the key
    is the one of the agent the identity names.
    """
    first = _recv_first(sock, timeout_ms)
    if first is None:
        return None
    identity = first.bytes
    if not first.more:
        raise ProtocolError(f"message from {identity!r} has no frames after the identity")
    frame0 = sock.recv(copy=False)
    try:
        if frame0.more:
            return identity, _user_id(frame0), decode(_recv_rest(sock, _frame0(frame0), limits), limits)
        return identity, _user_id(frame0), decode((_frame0(frame0),), limits)
    except ProtocolError as exc:
        raise ProtocolError(f"from {identity!r}: {exc}") from exc


def _recv_rest(sock: zmq.Socket, frame0: bytes | zmq.Frame, limits: Limits) -> list:
    """Frame 0 and the frames after it, up to the end of the multipart message.

    libzmq delivers a multipart message whole, so these receives never wait.  Frames beyond
    what any valid message may have are drained and dropped (the count stays visible to
    ``decode``, which then rejects the message), so a flood of frames costs no memory.
    """
    frames: list = [frame0]
    keep = limits.max_tensors + 1
    dropped = 0
    recv = sock.recv
    while True:
        frame = recv(copy=False)
        if len(frames) < keep:
            frames.append(frame)
        else:
            dropped += 1
        if not frame.more:
            break
    if dropped:
        raise ProtocolError(
            f"message has {len(frames) + dropped} frames; at most {keep} are possible"
        )
    return frames


def _recv_first(sock: zmq.Socket, timeout_ms: int | None) -> zmq.Frame | None:
    """The first frame, or None on timeout.  Polls only when no message is already queued."""
    if timeout_ms is None:
        try:
            return sock.recv(copy=False)
        except zmq.Again:  # the socket's RCVTIMEO expired
            return None
    try:
        return sock.recv(_NOBLOCK, copy=False)
    except zmq.Again:
        if timeout_ms <= 0:
            return None
    deadline = time.monotonic() + timeout_ms / 1000.0
    while True:
        remaining = int((deadline - time.monotonic()) * 1000.0 + 0.999)
        if remaining <= 0 or not sock.poll(remaining, _POLLIN):
            return None
        try:
            return sock.recv(_NOBLOCK, copy=False)
        except zmq.Again:  # another reader took it, or a spurious wake-up: wait again
            continue

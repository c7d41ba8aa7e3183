"""Creating the sockets of docs/PROTOCOL.md section 1, configured so that nothing hangs.

Data plane: every agent binds one PULL (``bind_pull``) and connects one PUSH per peer
(``connect_push``).  Control plane: the orchestrator binds a ROUTER (``bind_router``) and each
agent connects a DEALER named after itself (``connect_dealer``).  With ``CurveKeys`` the
binding side is the CurveZMQ server, the connecting side the client; a server socket also
names the ZAP domain ``ZAP_DOMAIN``, whose handler (protocol/curve.py) holds the allow-list.

Every socket has linger 0 (closing never waits for unsent messages), high-water marks for
back-pressure, and, where it receives, ``ZMQ_MAXMSGSIZE`` from the limits so that libzmq
refuses oversized frames before allocating them.
"""

from dataclasses import dataclass

import zmq

from .limits import DEFAULT_LIMITS, Limits

#: Messages queued per socket and direction before a send blocks (or raises zmq.Again with
#: NOBLOCK).  Small, because one message may hold megabytes of activations and the queue
#: is the back-pressure between agents; raise it for streams of small messages.
DEFAULT_HWM = 100

#: The ZAP domain of every CURVE server socket; `curve.start_authenticator` serves it.
ZAP_DOMAIN = b"synthgrad"


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ keys (Z85 bytes, 40 characters each) for a socket.

    Binding (server) sockets need ``public`` and ``secret``; connecting (client) sockets
    also need ``server_public``, the key they expect the server to prove it holds.  Keys
    encrypt the connection and authenticate the server; which clients a server accepts is
    the allow-list of its context's ZAP handler (`curve.start_authenticator`): without one,
    libzmq accepts every client.
    """

    public: bytes
    secret: bytes
    server_public: bytes | None = None

    @classmethod
    def generate(cls, server_public: bytes | None = None) -> "CurveKeys":
        """A fresh key pair (and optionally the server's public key, for a client)."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret, server_public)


def new_context(io_threads: int = 1) -> zmq.Context:
    """A new ZeroMQ context whose sockets default to linger 0."""
    ctx = zmq.Context(io_threads)
    ctx.setsockopt(zmq.LINGER, 0)
    return ctx


def bind_pull(
    ctx: zmq.Context,
    endpoint: str,
    hwm: int = DEFAULT_HWM,
    curve: CurveKeys | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[zmq.Socket, str]:
    """Bind an agent's inbound data socket; return it and the endpoint actually bound.

    A ``tcp://host:0`` (or ``:*``) endpoint gets a free port; the returned endpoint names it.
    """
    sock = _make(ctx, zmq.PULL, hwm, limits, curve, server=True)
    return sock, _bind(sock, endpoint)


def connect_push(
    ctx: zmq.Context, endpoint: str, hwm: int = DEFAULT_HWM, curve: CurveKeys | None = None
) -> zmq.Socket:
    """Connect an outbound data socket to a peer's PULL."""
    sock = _make(ctx, zmq.PUSH, hwm, None, curve, server=False)
    return _connect(sock, endpoint)


def bind_router(
    ctx: zmq.Context,
    endpoint: str,
    hwm: int = DEFAULT_HWM,
    curve: CurveKeys | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[zmq.Socket, str]:
    """Bind the orchestrator's control socket; return it and the endpoint actually bound.

    ``ROUTER_MANDATORY``: sending to an unknown identity raises (EHOSTUNREACH) instead of
    dropping, so the orchestrator knows; it catches that error, never lets it out.
    No ``ROUTER_HANDOVER``: a second connection with an identity already in use is refused
    by ZeroMQ, so no peer can take over a registered agent's control route by naming itself
    after it.
    """
    sock = _make(ctx, zmq.ROUTER, hwm, limits, curve, server=True)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock, _bind(sock, endpoint)


def connect_dealer(
    ctx: zmq.Context,
    endpoint: str,
    identity: str,
    hwm: int = DEFAULT_HWM,
    curve: CurveKeys | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> zmq.Socket:
    """Connect an agent's control socket to the orchestrator's ROUTER, named ``identity``."""
    name = identity.encode()
    if not 0 < len(name) <= 255 or name[0] == 0:
        raise ValueError(f"DEALER identity must be 1-255 bytes not starting with NUL: {identity!r}")
    sock = _make(ctx, zmq.DEALER, hwm, limits, curve, server=False)
    sock.setsockopt(zmq.IDENTITY, name)
    return _connect(sock, endpoint)


def _make(
    ctx: zmq.Context,
    socket_type: int,
    hwm: int,
    limits: Limits | None,
    curve: CurveKeys | None,
    server: bool,
) -> zmq.Socket:
    sock = ctx.socket(socket_type)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if limits is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
        if curve is not None:
            _apply_curve(sock, curve, server)
    except BaseException:
        sock.close(0)
        raise
    return sock


def _apply_curve(sock: zmq.Socket, keys: CurveKeys, server: bool) -> None:
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    if server:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    else:
        if keys.server_public is None:
            raise ValueError("a connecting socket needs CurveKeys.server_public")
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    try:
        sock.bind(endpoint)
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)
    except BaseException:
        sock.close(0)
        raise


def _connect(sock: zmq.Socket, endpoint: str) -> zmq.Socket:
    try:
        sock.connect(endpoint)
    except BaseException:
        sock.close(0)
        raise
    return sock

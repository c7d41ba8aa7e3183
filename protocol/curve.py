"""CurveZMQ on tcp: key files, their permission checks, and the ZAP allow-list.

On tcp every binding socket (the orchestrator's ROUTER, each agent's two PULLs) is a CURVE
server and every connecting socket a client (`sockets.CurveKeys`).  CURVE alone encrypts and
authenticates the *server* to the client; any client that knows a server's public key could
still connect.  The allow-list closes that: a ZAP handler (pyzmq's `ThreadAuthenticator`, one
per ZeroMQ context) accepts a connection only when its client public key is listed
(`AllowList`).  libzmq then stamps every message from that connection with the key's Z85
text as its `User-Id` property, which `transport.recv_message_with_user` and
`recv_routed_with_user` read, so a receiver knows which listed peer really sent a message.

A key directory (written by `synthgrad keys generate DIR`, orchestrator/keys.py), mode 0700::

    DIR/orchestrator.key           the orchestrator's public key (every agent needs it)
    DIR/orchestrator.key_secret    its secret key, mode 0600
    DIR/agents/NAME.key            agent NAME's public key (what the allow-lists list)
    DIR/agents/NAME.key_secret     its secret key, mode 0600

The files are pyzmq/czmq certificates (`zmq.auth.create_certificates`), so other ZeroMQ tools
read them.  An agent on another host needs only its own secret file and `orchestrator.key`.
A secret file that group or others may read or write, or one in a directory they may write
(they could swap the file), is refused with an error naming the file and the `chmod` that
fixes it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import zmq
from zmq.auth.certs import load_certificate

from .sockets import ZAP_DOMAIN

ORCHESTRATOR = "orchestrator"  # the orchestrator's key pair is DIR/orchestrator.key{,_secret}
AGENTS_DIR = "agents"  # agents' key pairs are DIR/agents/NAME.key{,_secret}
Z85_KEY_CHARS = 40  # a 32-byte Curve25519 key in Z85
DENIALS_LOGGED = 5  # refused connections logged in full; later ones are only counted

log = logging.getLogger("synthgrad.curve")


class KeyFileError(ValueError):
    """A key file or directory that is missing, malformed or not private enough.

    The message names the file and says how to fix it (generate it, or the `chmod`)."""


def public_file(key_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Where the public key of agent `name` (None: the orchestrator) lives in `key_dir`."""
    base = Path(key_dir) if name is None else Path(key_dir) / AGENTS_DIR
    return base / f"{name or ORCHESTRATOR}.key"


def secret_file(key_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Where the secret key of agent `name` (None: the orchestrator) lives in `key_dir`."""
    return public_file(key_dir, name).with_suffix(".key_secret")


def check_private(path: Path) -> None:
    """Refuse a secret file anyone but its owner may read or write, or may replace.

    Raises:
        KeyFileError: not a regular file; mode grants group/other anything (fix:
            `chmod 600 FILE`); its directory is writable by group/other (`chmod 700 DIR`).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file; create keys with `synthgrad keys generate DIR`") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: secret key file is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"refusing to use it. Fix: chmod 600 {path}"
        )
    folder = path.parent.stat()
    if folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX:
        raise KeyFileError(
            f"{path.parent}: directory of a secret key is writable by group or others "
            f"(mode {stat.S_IMODE(folder.st_mode):04o}). Fix: chmod 700 {path.parent}"
        )


def _read(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{path}: not a readable key file ({err}); create keys with `synthgrad keys generate DIR`") from None
    for what, key in (("public", public), ("secret", secret)):
        if key is not None and len(key) != Z85_KEY_CHARS:
            raise KeyFileError(f"{path}: the {what} key is not {Z85_KEY_CHARS} Z85 characters")
    return public, secret


def load_public(path: str | os.PathLike) -> bytes:
    """The Z85 public key in a certificate file (public or secret).

    Raises:
        KeyFileError: missing or malformed.
    """
    return _read(Path(path))[0]


def load_secret(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """`(public, secret)` (Z85) from a secret certificate file, after `check_private`.

    Raises:
        KeyFileError: missing, malformed, holds no secret key, or not private (see
            `check_private`).
    """
    path = Path(path)
    check_private(path)
    public, secret = _read(path)
    if secret is None:
        raise KeyFileError(f"{path}: holds no secret key (a .key file is the public half; use the .key_secret file)")
    return public, secret


class AllowList:
    """The client public keys a process's CURVE servers accept, by agent name.

    Passed to `ThreadAuthenticator.configure_curve_callback`: the ZAP thread calls `callback`
    once per connection handshake (not per message).  `update` replaces the list; connections
    already accepted stay up, so narrow it before peers learn the endpoint.
    """

    def __init__(self, keys: Mapping[str, bytes] | None = None, logger: logging.Logger | None = None) -> None:
        self._names: dict[bytes, str] = {}
        self.denied = 0
        self.log = logger or log
        self.update(keys or {})

    def update(self, keys: Mapping[str, bytes | str]) -> None:
        """Allow exactly these agents' public keys (Z85, bytes or str), nothing else."""
        self._names = {(k.encode() if isinstance(k, str) else bytes(k)): name for name, k in keys.items()}

    def name_of(self, z85_key: bytes | str) -> str | None:
        """The agent whose public key this is, or None when it is not listed."""
        return self._names.get(z85_key.encode() if isinstance(z85_key, str) else z85_key)

    def callback(self, domain: str, z85_key: bytes) -> bool:
        # Runs in the authenticator's thread; reading a dict that `update` swaps whole is safe.
        if z85_key in self._names:
            return True
        self.denied += 1
        if self.denied <= DENIALS_LOGGED:
            self.log.warning("refused a CURVE client whose key %s is not on the allow-list", z85_key.decode(errors="replace"))
        return False


def start_authenticator(ctx: zmq.Context, allow: AllowList):
    """Start the ZAP handler of `ctx` (pyzmq's ThreadAuthenticator) checking `allow`.

    Start it before any CURVE server socket of `ctx` binds: libzmq lets every client in when
    no ZAP handler is listening.  Stop it (`.stop()`) before the context is destroyed.

    Raises:
        RuntimeError: libzmq has no CURVE, or the thread did not start.
        zmq.ZMQError: `ctx` already has a ZAP handler.
    """
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support; tcp runs need it")
    # Imported here: it brings asyncio and a thread, which only tcp runs need.
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger("synthgrad.zap"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=allow)
    return auth

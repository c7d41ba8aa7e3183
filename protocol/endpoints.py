"""Endpoint strings: ``ipc://`` paths under a short per-run directory, and ``tcp://``.

On tcp (``run.transport = "tcp"``) every socket binds ``tcp://ADDR:*``, an ephemeral port on
one interface address (``run.bind``, loopback by default), and reports the endpoint libzmq
actually bound; ``check_interface`` refuses an address this host cannot bind before anything
starts.

A Unix socket path must fit ``sockaddr_un.sun_path``: 107 bytes on Linux, 103 on macOS and
the BSDs.  libzmq fails on longer ones with an unhelpful error, and a run directory under a
long workspace path easily exceeds it, so ipc sockets live in a short directory of their
own (``/tmp/sg-XXXXXXXX``) and a name that would still be too long is replaced by a short
hash of itself.
"""

import hashlib
import os
import shutil
import socket
import sys
import tempfile

#: Longest Unix socket path, in bytes, without the terminating NUL.
MAX_IPC_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103


class IpcNamespace:
    """A private directory (mode 0700) holding a run's ipc sockets.

    Example::

        ns = IpcNamespace()                # creates /tmp/sg-k2j4x9q1
        ns.endpoint("layer1")              # 'ipc:///tmp/sg-k2j4x9q1/layer1'
        ns.cleanup()                       # removes the directory and its sockets

    It is also a context manager that cleans up on exit.  Another process can derive the
    same endpoints with ``IpcNamespace.attach(path)``, which never deletes anything.
    """

    def __init__(self, base_dir: str | None = None, *, prefix: str = "sg-", fallback: bool = True):
        """Create the directory.

        Args:
            base_dir: where to create it; default ``/tmp`` when writable (short, unlike the
                ``$TMPDIR`` of some systems), else ``tempfile.gettempdir()``.
            prefix: start of the directory name.
            fallback: when ``base/name`` would exceed ``MAX_IPC_PATH_BYTES``, use a 16-hex
                hash of ``name`` instead (True), or raise ``ValueError`` (False).
        """
        if base_dir is None:
            base_dir = "/tmp" if os.access("/tmp", os.W_OK) else tempfile.gettempdir()
        self.path: str = tempfile.mkdtemp(prefix=prefix, dir=base_dir)
        self.fallback = fallback
        self._owned = True

    @classmethod
    def attach(cls, path: str, *, fallback: bool = True) -> "IpcNamespace":
        """A view of an existing namespace directory; ``cleanup`` leaves it alone."""
        self = cls.__new__(cls)
        self.path = path
        self.fallback = fallback
        self._owned = False
        return self

    def endpoint(self, name: str) -> str:
        """``ipc://`` endpoint for the socket ``name`` (one path component) in this directory.

        Raises:
            ValueError: ``name`` is not a plain file name, or the path is too long even after
                the fallback (or the fallback is off); the message gives the path and the fix.
        """
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise ValueError(f"ipc socket name must be a plain file name, got {name!r}")
        path = os.path.join(self.path, name)
        if len(os.fsencode(path)) <= MAX_IPC_PATH_BYTES:
            return "ipc://" + path
        if self.fallback:
            short = "h" + hashlib.blake2s(name.encode(), digest_size=8).hexdigest()
            hashed = os.path.join(self.path, short)
            if len(os.fsencode(hashed)) <= MAX_IPC_PATH_BYTES:
                return "ipc://" + hashed
        raise ValueError(
            f"ipc socket path {path!r} is {len(os.fsencode(path))} bytes, over the limit of "
            f"{MAX_IPC_PATH_BYTES} for Unix sockets; use a shorter base_dir (the default "
            "/tmp is short) or a shorter socket name"
        )

    def cleanup(self) -> None:
        """Remove the directory and the socket files in it (only if this object created it)."""
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "IpcNamespace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"IpcNamespace({self.path!r})"


def tcp_endpoint(host: str = "127.0.0.1", port: int = 0) -> str:
    """``tcp://`` endpoint; port 0 asks the binder for a free port (see ``bind_pull``).

    The default host is loopback: binding every interface must be asked for explicitly
    (``host="*"``), and across hosts the connection should use CurveZMQ keys.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"tcp port must be 0-65535, got {port}")
    if ":" in host and not host.startswith("["):  # IPv6 literal
        host = f"[{host}]"
    return f"tcp://{host}:{port if port else '*'}"


def check_interface(host: str) -> None:
    """Refuse a tcp bind address that this host cannot bind (no such interface).

    Raises:
        ValueError: naming the address and the system's reason.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host.strip("[]"), 0))
    except OSError as err:
        raise ValueError(
            f"cannot bind {host!r} ({err.strerror or err}); give the address of one of this host's "
            "interfaces (127.0.0.1 keeps the run on this host)"
        ) from None

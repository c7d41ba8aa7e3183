"""Starting agent processes.  Locally: a fork server that has already imported torch.

A cold Python process importing torch, zmq and numpy takes about 1.5 s and 150 MB; forked
from a server that imported them once, an agent starts in milliseconds and shares those
pages (see docs/results.md, "Spawn").  The `Launcher` interface leaves room for launchers
that start agents elsewhere (Ray actors, `synthgrad spawn` on another host).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from multiprocessing import forkserver
from typing import Protocol

# What every agent needs, imported once in the fork server.  torch._dynamo is here because
# creating the first optimiser imports it (about 1.5 s); zarr reads MNIST; tcp runs add CURVE.  Names that are
# not installed are skipped by multiprocessing.
PRELOAD = [
    "numpy",
    "zmq",
    "msgpack",
    "torch",
    "torch._dynamo",
    "zarr",
    "synthgrad.agents.runtime.process",
    "synthgrad.protocol.curve",
    "zmq.auth.thread",  # the ZAP handler of tcp runs (it imports asyncio)
    "synthgrad.agents.kinds.layers",
    "synthgrad.agents.kinds.source",
]


def _agent_entry(name: str, control_endpoint: str, log_path: str | None, keys_dir: str | None, parent_pid: int) -> None:
    # Imported here, not at module level, so the orchestrator need not import the runtime;
    # in the fork server it is already loaded (PRELOAD), so this costs nothing.
    from synthgrad.agents.runtime.process import agent_main

    agent_main(name, control_endpoint, log_path, keys_dir, parent_pid)


class AgentHandle(Protocol):
    """What the supervisor needs of a started agent."""

    pid: int | None
    exitcode: int | None

    def is_alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


class Launcher(Protocol):
    """Starts agents that will connect to the orchestrator's control endpoint.

    `keys_dir` (tcp runs): the key directory (protocol/curve.py) the agent loads its own
    key pair and the orchestrator's public key from.  A path, never the keys themselves,
    so secrets stay in files whose permissions the agent checks.
    """

    def warm(self) -> None: ...
    def start(self, name: str, control_endpoint: str, log_path: str | None, keys_dir: str | None = None) -> AgentHandle: ...
    def close(self) -> None: ...


class ForkServerLauncher:
    """Local processes forked from a server that preloaded torch, zmq and numpy."""

    def __init__(self, preload: list[str] | None = None) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(preload or PRELOAD)

    def warm(self) -> None:
        """Start the fork server now, so its imports overlap with the orchestrator's work."""
        forkserver.ensure_running()

    def start(self, name: str, control_endpoint: str, log_path: str | None, keys_dir: str | None = None) -> AgentHandle:
        process = self.context.Process(
            target=_agent_entry,
            args=(name, control_endpoint, log_path, keys_dir, os.getpid()),  # the agent watches this pid
            name=f"synthgrad:{name}",
            daemon=True,
        )
        process.start()
        return process

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the fork server (the end of `synthgrad run`; tests may keep one warm).

        Closing its alive pipe asks it to exit; it does once no agent holds the pipe
        either (every agent inherits it), so this waits at most `timeout_s`, then kills it.
        """
        server = forkserver._forkserver
        pid = getattr(server, "_forkserver_pid", None)
        if pid is None:
            return
        stopper = threading.Thread(target=server._stop, daemon=True)  # private, but the only way
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stopper.join(1.0)

"""No orphans: an agent process watches the orchestrator's pid and leaves when it dies.

Why not PR_SET_PDEATHSIG alone: a local agent's parent is the fork server, not the
orchestrator, and every forked agent inherits the server's "alive" pipe, so the server
never sees the orchestrator die and the agents' parent-death signal never fires (measured:
agents trained on unsupervised for 20 s after a SIGKILL of `synthgrad run`).  Instead each
agent opens a pidfd on the orchestrator's pid (Linux >= 5.3; a 0.2 s `kill(pid, 0)` poll
elsewhere) in a daemon thread.  When it becomes readable the orchestrator is gone, whatever
the signal, SIGKILL included: the agent is sent SIGTERM (it stops as it would on STOP,
saving `final.pt`), and if it has not left `GRACE_S` later the thread ends it.  The last
agent out removes the run's ipc directory (`remove_ipc_dir`); once every agent is gone the
fork server sees its alive pipe close and exits too.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import threading
import time
from pathlib import Path

GRACE_S = 5.0  # after the orchestrator died: time to stop cleanly before a hard exit
POLL_S = 0.2  # where there is no pidfd

log = logging.getLogger("synthgrad.agent")


def _wait_for_exit(pid: int) -> None:
    """Block until process `pid` has exited (returns at once if it is already gone)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd on this platform or kernel: poll
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(POLL_S)
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def _alive(pid) -> bool:
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, ValueError, TypeError, IndexError):
        return False


def _dead_agents_endpoints(run_dir: Path | None, endpoints: dict) -> list[str]:
    """The ipc endpoints of agents whose process is gone (agents.json has every agent's
    current pid): a killed agent leaves its socket files, and its successor may never come."""
    if run_dir is None:
        return []
    try:
        pids = {n: a.get("pid") for n, a in json.loads((run_dir / "agents.json").read_text())["agents"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return []
    return [e for n, planes in endpoints.items() if not _alive(pids.get(n)) for e in planes.values()]


def remove_ipc_dir(control_endpoint: str, own: tuple[str, ...] = (), run_dir: Path | None = None, endpoints: dict | None = None) -> None:
    """After the orchestrator died: remove its control socket file, `own` (this agent's ipc
    endpoints, when it cannot close its sockets) and those of agents that are gone, and, when
    this agent is the last out (the folder is empty), the run's ipc folder.  tcp runs have none."""
    if not control_endpoint.startswith("ipc://"):
        return
    control = Path(control_endpoint[len("ipc://"):])
    others = _dead_agents_endpoints(run_dir, endpoints or {})
    for path in (control, *(Path(e[len("ipc://"):]) for e in (*own, *others) if e.startswith("ipc://"))):
        try:
            path.unlink()
        except OSError:
            pass
    try:
        control.parent.rmdir()  # fails while another agent's sockets are still there
    except OSError:
        pass


class ParentWatch:
    """Watches `pid` (the orchestrator) from a daemon thread; `gone` is set when it died."""

    def __init__(self, name: str, pid: int, control_endpoint: str) -> None:
        self.name, self.pid, self.control_endpoint = name, pid, control_endpoint
        self.gone = threading.Event()
        self.own: tuple[str, ...] = ()  # this agent's bound ipc endpoints, once bound
        self.run_dir: Path | None = None  # and, from WELCOME, the run directory and endpoints
        self.endpoints: dict = {}
        self.thread = threading.Thread(target=self._watch, name="parent-watch", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        _wait_for_exit(self.pid)
        self.gone.set()
        log.warning("%s: the orchestrator (pid %d) is gone; stopping", self.name, self.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_S)
        log.error("%s: still here %.0f s after the orchestrator died; exiting now", self.name, GRACE_S)
        self.clean_up()
        os._exit(3)

    def clean_up(self) -> None:
        """What this agent can remove of the run's ipc folder (see `remove_ipc_dir`)."""
        remove_ipc_dir(self.control_endpoint, self.own, self.run_dir, self.endpoints)

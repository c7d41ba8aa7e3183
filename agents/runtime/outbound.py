"""An agent's sends to its peers: one PUSH per peer and plane, a queue per socket, and what
becomes of a message to a peer that is down (docs/fault-tolerance.md).

Sends never block: a message ZeroMQ cannot take now stays in its socket's queue and is
handed over when the socket is writable (`flush`).  While the orchestrator says a peer is
down, a message to it is dropped and counted (`dropped.peer_down.PEER`) instead of queued,
so an agent upstream of a dead one goes on stepping under DNI; the source is the exception:
its data waits under back-pressure (no training example is skipped) and its context
(labels) is held for the peer's return, bounded by `HOLD_LIMIT`.  When the peer is back, the
held messages go out after the last `RESEND` context messages sent to it before the fault,
which may have died with it: a locked chain would otherwise wait forever for the labels of
the step it sends the restarted agent next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import zmq

from ...protocol import Kind, Message, send_message
from .core import FORWARD

HOLD_LIMIT = 1024  # the source's messages held for a down peer (the receivers' step window)
RESEND = 32  # the source's last context messages per peer, sent again after its restart


class Outbound:
    """The sending side of one agent's data planes.

    Args:
        connect: ``connect(dest, plane)`` makes the PUSH socket to a peer's plane.
        is_source: the agent is the run's source (its data waits, its context is held).
    """

    def __init__(self, connect: Callable[[str, str], zmq.Socket], is_source: bool) -> None:
        self.connect = connect
        self.is_source = is_source
        self.pushes: dict[tuple[str, str], zmq.Socket] = {}
        self.pending: dict[zmq.Socket, deque[Message]] = {}
        self.down: set[str] = set()
        self.dropped: dict[str, int] = {}  # messages dropped because their peer was down
        self.held: dict[str, deque[tuple[str, Message]]] = {}
        self.recent: dict[str, deque[Message]] = {}
        self.sent = 0  # messages handed to ZeroMQ (the status table's messages out per s)

    def _socket(self, dest: str, plane: str) -> zmq.Socket:
        sock = self.pushes.get((dest, plane))
        if sock is None:
            sock = self.connect(dest, plane)
            self.pushes[(dest, plane)] = sock
            self.pending[sock] = deque()
        return sock

    def _fate(self, dest: str, plane: str, msg: Message) -> str:
        """"send", or while `dest` is down "drop" (counted) or "hold" (the source's context)."""
        if dest not in self.down:
            return "send"
        if not self.is_source:
            return "drop"
        return "send" if plane == FORWARD and msg.kind == Kind.ACT else "hold"

    def _drop(self, dest: str, n: int = 1) -> None:
        self.dropped[dest] = self.dropped.get(dest, 0) + n

    def _hold(self, dest: str, plane: str, msg: Message) -> None:
        held = self.held.setdefault(dest, deque())
        held.append((plane, msg))
        if len(held) > HOLD_LIMIT:
            held.popleft()
            self._drop(dest)

    def put(self, dest: str, plane: str, msg: Message) -> None:
        """Queue `msg` for peer `dest` on `plane`, or drop or hold it (see the module)."""
        fate = self._fate(dest, plane, msg)
        if fate == "send":
            self.pending[self._socket(dest, plane)].append(msg)
            if self.is_source and msg.kind == Kind.CTX:
                self.recent.setdefault(dest, deque(maxlen=RESEND)).append(msg)
        elif fate == "hold":
            self._hold(dest, plane, msg)
        else:
            self._drop(dest)

    def flush(self) -> bool:
        """Hand queued messages to ZeroMQ without blocking; True when nothing is left."""
        clear = True
        for sock, queue in self.pending.items():
            while queue:
                try:
                    send_message(sock, queue[0], zmq.NOBLOCK)
                except zmq.Again:
                    clear = False
                    break
                queue.popleft()
                self.sent += 1
        return clear

    def writers(self) -> list[zmq.Socket]:
        """The sockets with messages waiting (to poll for writability)."""
        return [sock for sock, queue in self.pending.items() if queue]

    def went_down(self, peer: str) -> None:
        """The orchestrator says `peer` is down: what is queued for it is dropped or held."""
        self.down.add(peer)
        for (dest, plane), sock in self.pushes.items():
            if dest == peer:  # each queued message meets the fate a new one would
                queued, self.pending[sock] = self.pending[sock], deque()
                for msg in queued:
                    self.put(dest, plane, msg)

    def came_back(self, peer: str) -> None:
        """`peer` is up again (a new incarnation): what was held for it goes out, in order."""
        self.down.discard(peer)
        again = [(FORWARD, msg) for msg in self.recent.pop(peer, ())]
        for plane, msg in again + list(self.held.pop(peer, ())):
            self.pending[self._socket(peer, plane)].append(msg)

    def metrics(self) -> dict[str, int]:
        """`dropped.peer_down.PEER` counts and the queue depths now (`queued`, `held`)."""
        out = {f"dropped.peer_down.{peer}": n for peer, n in self.dropped.items()}
        out["queued"] = sum(len(q) for q in self.pending.values())
        out["held"] = sum(len(q) for q in self.held.values())
        return out

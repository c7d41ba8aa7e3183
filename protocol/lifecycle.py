"""An agent's lifecycle, as both sides of the control plane track it.

    spawned -> registered -> ready -> running -> stopping -> stopped
                       (any state) -> failed

The agent process moves through these as it says HELLO, builds itself from its WELCOME,
takes START and STOP; the supervisor moves its record of each agent as the agent's messages
arrive (HELLO, the `ready` heartbeat, START sent, the final metrics report) or as its process
is seen to die.  Heartbeats carry the agent's state as ``meta["state"]``, the member's value.
"""

from __future__ import annotations

import enum


class Lifecycle(str, enum.Enum):
    """One agent's state; the value is the name used on the wire and in status output."""

    SPAWNED = "spawned"  # the process exists; nothing heard from it yet
    REGISTERED = "registered"  # said HELLO; waits for its WELCOME
    READY = "ready"  # built from its plan, sockets bound; waits for START
    RUNNING = "running"  # training
    STOPPING = "stopping"  # told to stop (STOP, SIGTERM): saving and reporting
    STOPPED = "stopped"  # left cleanly after its final report
    FAILED = "failed"  # raised, or its process died without a final report

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def reached(self, other: Lifecycle) -> bool:
        """True when this state is `other` or later on the normal path (never for FAILED)."""
        return self is not Lifecycle.FAILED and self.rank >= other.rank

    def advance(self, new: Lifecycle) -> Lifecycle:
        """The state after a report of `new`: a later state wins, an earlier one (a late
        message) changes nothing, and FAILED is final."""
        if self is Lifecycle.FAILED or self is Lifecycle.STOPPED:
            return self
        return new if new is Lifecycle.FAILED or new.rank > self.rank else self


_ORDER = list(Lifecycle)

"""Message kinds, their wire codes, and what each kind requires of a message."""

import enum


class Kind(enum.IntEnum):
    """What a message is; the value is the u8 code at offset 4 of frame 0.

    Codes are fixed forever within a major version; a minor version may add codes, which an
    older receiver rejects as unknown.  Code 0 is never used, so that a zeroed buffer is
    never a valid message.
    """

    HELLO = 1  #: agent -> orchestrator: registration (meta: the agent's kind, ports, pid...)
    WELCOME = 2  #: orchestrator -> agent: registration accepted (meta: run settings)
    START = 3  #: orchestrator -> agents: begin stepping
    ACT = 4  #: forward activation on a link
    SYNTH_INPUT = 5  #: synthetic input, sent ahead of the real activation
    SYNTH_GRAD = 6  #: synthetic gradient answering an activation (receiver-hosted SG model)
    GRAD = 7  #: gradient target (true or bootstrapped) flowing backward on a link
    CTX = 8  #: context such as labels, for a loss head or a conditioned (cDNI) interface
    METRICS = 9  #: metrics in meta (numbers by name), to the orchestrator
    HEARTBEAT = 10  #: liveness, both ways on the control plane
    CHECKPOINT = 11  #: save request (orchestrator -> agent) or report (agent -> orchestrator)
    STOP = 12  #: stop stepping and exit cleanly
    ERROR = 13  #: a failure report; meta["error"] holds the text


#: Kinds that carry tensors on a link: they need a sender, a destination port and a tensor.
LINK_KINDS = frozenset({Kind.ACT, Kind.SYNTH_INPUT, Kind.SYNTH_GRAD, Kind.GRAD})

# Index = wire code; None for unassigned codes.  A list lookup is the cheapest way to map a
# u8 from the wire to a member, and an out-of-range code cannot occur for a u8.
KIND_BY_CODE: list = [None] * 256
for _kind in Kind:
    KIND_BY_CODE[_kind.value] = _kind


def kind_problem(kind: Kind, src: str, port: str, n_tensors: int, meta: dict) -> str | None:
    """Return why a message of ``kind`` with these fields is invalid, or None if it is valid.

    The rules (docs/PROTOCOL.md, "Kinds"): link kinds need ``src``, ``port`` and at least one
    tensor; CTX needs ``src`` and a tensor; HELLO needs ``src``; ERROR needs a str
    ``meta["error"]``.  Everything else is optional.
    """
    if kind in LINK_KINDS:
        if not src:
            return f"{kind.name} needs a non-empty src"
        if not port:
            return f"{kind.name} needs a non-empty destination port"
        if not n_tensors:
            return f"{kind.name} needs at least one tensor"
    elif kind is Kind.CTX:
        if not src:
            return "CTX needs a non-empty src"
        if not n_tensors:
            return "CTX needs at least one tensor"
    elif kind is Kind.HELLO:
        if not src:
            return "HELLO needs a non-empty src (the agent's name)"
    elif kind is Kind.ERROR:
        if not isinstance(meta.get("error"), str):
            return 'ERROR needs meta["error"], a str describing the failure'
    return None

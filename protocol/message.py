"""The in-memory form of one message."""

from dataclasses import dataclass, field

import numpy as np

from .kinds import Kind
from .layout import PROTOCOL_VERSION


@dataclass(slots=True)
class Message:
    """One protocol message: what ``encode`` takes and ``decode`` returns.

    Attributes:
        kind: what the message is (see ``Kind`` for who sends each).
        src: name of the sending agent ("" allowed for orchestrator kinds).
        port: the destination port on the receiving agent ("" when none applies).
        step: id of the batch this message belongs to (int64).
        tick: the sender's own clock (int64).
        run: id of the run, so that a stray message from another run is recognisable.
        tensors: name -> array.  On encode: numpy arrays or buffers of an allowed dtype.
            On decode: read-only arrays viewing the received frames (no copy).
        meta: a small map of msgpack primitives (None, bool, int, float, str, bytes,
            lists and str-keyed dicts of them).
        ts: send time, ns since the Unix epoch; ``encode`` writes ``time.time_ns()`` on the
            wire when it is 0 (the object itself is left unchanged).
        version: on decode, the version the sender wrote; ``encode`` always writes
            ``PROTOCOL_VERSION``.
    """

    kind: Kind
    src: str = ""
    port: str = ""
    step: int = 0
    tick: int = 0
    run: str = ""
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    ts: int = 0
    version: tuple[int, int] = PROTOCOL_VERSION

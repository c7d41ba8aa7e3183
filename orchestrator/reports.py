"""What the orchestrator reads of an agent's control messages, checked before any of it is used.

A peer may send any well-formed message (docs/PROTOCOL.md, section 12): a METRICS whose
`steps` is a string, or whose meta overwrites the columns `metrics.jsonl` writes itself, must
be dropped and counted like a bad data message, never crash the orchestrator.  `check_report`
names the reason a message does not fit, or returns None:

    reason          the message ...
    decode          could not be decoded (counted by the supervisor's receive)
    stranger        comes from an identity that names no agent of this run
    key             holds another agent's CURVE key (tcp)
    run             carries another run's id
    report          is a HELLO, METRICS or HEARTBEAT whose values the orchestrator cannot read:
                    a count that is not a non-negative integer, a number that is not a
                    number, a reserved key, an evaluation report without `train_steps`;
                    or a CHECKPOINT answer without its id, step, file and SHA-256
"""

from __future__ import annotations

from typing import Any

from ..protocol.kinds import Kind

CONTROL_REASONS = ("decode", "stranger", "key", "run", "report")
# Counts the supervisor and the progress line do arithmetic on.
COUNTS = ("steps", "train_steps", "budget", "eval", "pid", "queued", "held", "parked", "clock", "clock_ns")
# Numbers the progress line, status.json and the plots read; may be non-finite (a diverged run).
NUMBERS = ("loss", "train_accuracy", "test_accuracy", "steps_per_s", "messages_in_per_s", "messages_out_per_s")
NUMBER_PREFIXES = ("sg_loss.", "sg_cosine.", "sg_norm_ratio.", "sg_staleness.", "charts/", "losses/")  # per link: src->dst; RL (CleanRL's names)
FLAGS = ("final", "final_report", "last")
# Columns of a metrics.jsonl line that the orchestrator writes itself (rundir.RunDir.record).
RESERVED = ("t", "agent", "step")
REJECTED = "rejected."
# Counters by prefix: rejects by reason, drops by bounded cache, non-finite values by quantity.
COUNTERS = (REJECTED, "dropped.", "nonfinite.")
FAULT_DROPS = ("peer_down", "gradient_wait", "incomplete_step")  # dropped.WHAT.PEER of faults


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_report(kind: Kind, meta: dict) -> str | None:
    """Why the orchestrator cannot use this METRICS / HEARTBEAT meta, or None when it can.

    Returns a human-readable reason (for the log line); the count goes under "report".
    """
    if kind == Kind.CHECKPOINT:
        return _check_checkpoint(meta)
    if kind not in (Kind.METRICS, Kind.HEARTBEAT, Kind.HELLO):
        return None
    for key in RESERVED:
        if key in meta:
            return f"meta key {key!r} is reserved for the orchestrator's own column"
    for key, value in meta.items():
        if key in COUNTS or key.startswith(COUNTERS):
            if not _count(value):
                return f"{key!r} must be a non-negative integer, got {value!r}"
        elif (key in NUMBERS or key.startswith(NUMBER_PREFIXES)) and not _number(value):
            return f"{key!r} must be a number, got {value!r}"
        elif key == "host" and not isinstance(value, str):
            return f"'host' must be a host name, got {value!r}"
        elif key in FLAGS and not isinstance(value, bool):
            return f"{key!r} must be true or false, got {value!r}"
    if "eval" in meta and "train_steps" not in meta:
        return "an evaluation report needs 'train_steps'"
    return None


def _check_checkpoint(meta: dict) -> str | None:
    """An agent's CHECKPOINT answer: {id, step, file, sha256} (orchestrator/checkpoints.py)."""
    if not _count(meta.get("id")):
        return f"'id' must be a non-negative integer, got {meta.get('id')!r}"
    if not _count(meta.get("steps", 0)):
        return f"'steps' must be a non-negative integer, got {meta.get('steps')!r}"
    step = meta.get("step")
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= -1):
        return f"'step' must be an integer >= -1, got {step!r}"
    if not isinstance(meta.get("file"), str):
        return "'file' must be the checkpoint's path"
    sha = meta.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return f"'sha256' must be 64 lowercase hex digits, got {sha!r}"
    return None


def counters(metrics: dict, prefix: str) -> dict[str, int]:
    """The counters under `prefix` ("rejected.", "dropped.", "nonfinite.") of a report,
    without the prefix: ``{"shape": 3}``."""
    return {k[len(prefix):]: int(v) for k, v in metrics.items() if k.startswith(prefix)}


def drop_warnings(agents: dict[str, dict]) -> list[str]:
    """One line per agent and bounded cache that dropped something, naming the option that
    would have kept it (summary.json's per-agent `dropped`)."""
    lines, faults = [], []
    for name, summary in agents.items():
        for what, n in sorted(summary.get("dropped", {}).items()):
            cache, _, link = what.partition(".")
            if cache in FAULT_DROPS:
                faults.append(f"{name} {what} {n:,}")
                continue
            if cache == "sg_cache":
                lines.append(
                    f"warning: {name} dropped {n:,} gradient targets: its SG cache on {link} forgot their "
                    f"activations first; raise {link}.sg.cache (or link_defaults.sg.cache) above the steps a target takes to come back"
                )
            else:
                lines.append(f"warning: {name} dropped {n:,} ({what})")
    if faults:  # the cost of a fault, not a setting to change (docs/fault-tolerance.md)
        lines.append("dropped while a peer was down or restarting: " + ", ".join(faults))
    return lines

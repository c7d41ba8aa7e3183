"""`RUN_DIR/status.json`: what a run is doing now, for `synthgrad status` and `synthgrad stop`.

The supervisor rewrites the file atomically (tmp and rename: a reader never sees half of
it) about once a second while the run lives, at each phase change, and once more after
summary.json when the run has ended.  A file rather than a query on the control socket:

- it outlives the run, so `status` shows how a run ended the same way it shows a live one;
- it needs read access to the run directory only; a tcp run's control socket admits
  CURVE keys of its agents alone (docs/security.md), and no reader needs a key;
- a reader cannot slow or break the supervisor's loop: writing costs a fraction of a
  millisecond a second, whoever watches;
- it names the orchestrator's pid and host, which is what `stop` needs.

Its staleness is visible: `updated_at`, and a pid that no longer runs while `state` is
still live means the orchestrator died without ending the run (`read_status` says so).

Schema (all times in seconds; `null` where not known yet):

    run_id, run_dir, state (one of STATES), exit_code (once ended), orchestrator_pid, host,
    started_at, updated_at (unix times), elapsed_s (since the command started), steps, budget,
    eta_s, samples_per_s, loss, test_accuracy, restarts, faults, resumable (a checkpoint set is
    complete), summary (path, once written),
    agents: {name: AGENT_FIELDS}, links: {"src->dst": {host, loss, cosine, norm_ratio, staleness}}
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

from .restarts import AgentRecord
from .rundir import dumps, replace_text

STATUS_FILE = "status.json"
INTERVAL_S = 1.0
LIVE = ("starting", "training", "stopping")
ENDED = ("finished", "failed", "interrupted")
STATES = LIVE + ENDED
# One row per agent (`synthgrad status`, docs/watching.md).
AGENT_FIELDS = (
    "state", "pid", "host", "steps", "clock", "tick_every", "steps_per_s", "messages_in_per_s",
    "messages_out_per_s", "queued", "held", "parked", "staleness", "loss", "sg_loss", "sg_cosine",
    "rejected", "restarts",
)
SG_QUALITY = {"sg_loss": "loss", "sg_cosine": "cosine", "sg_norm_ratio": "norm_ratio", "sg_staleness": "staleness"}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def agent_row(record: AgentRecord, tick_every: int) -> dict:
    """One agent's row from its record and its newest reported values (`record.latest`)."""
    latest = record.latest
    quality = {key: [v for k, raw in latest.items() if k.startswith(key + ".") and (v := _number(raw)) is not None] for key in SG_QUALITY}
    return {
        "state": "restarting" if record.down else record.state.value,
        "pid": record.pid,
        "host": record.host,
        "steps": record.steps,
        "clock": latest.get("clock"),
        "tick_every": tick_every,
        **{k: _number(latest.get(k)) for k in ("steps_per_s", "messages_in_per_s", "messages_out_per_s", "loss")},
        **{k: latest.get(k) for k in ("queued", "held", "parked")},
        "staleness": _mean(quality["sg_staleness"]),
        "sg_loss": _mean(quality["sg_loss"]),
        "sg_cosine": _mean(quality["sg_cosine"]),
        "rejected": sum(record.counters("rejected.").values()),
        "restarts": record.restarts,
        "last_heard_s": round(time.monotonic() - record.last_heard, 3),
    }


def link_rows(agents: dict[str, AgentRecord]) -> dict[str, dict]:
    """SG quality per interface, from the agent hosting each SG model."""
    links: dict[str, dict] = {}
    for name, record in agents.items():
        for key, value in record.latest.items():
            prefix, _, label = key.partition(".")
            if prefix in SG_QUALITY and label:
                links.setdefault(label, {"host": name, **dict.fromkeys(SG_QUALITY.values())})[SG_QUALITY[prefix]] = _number(value)
    return links


class StatusBoard:
    """Writes status.json for one run (see the module docstring)."""

    def __init__(self, run_dir: Path, run_id: str, started_at: float) -> None:
        self.path = Path(run_dir) / STATUS_FILE
        self.run_id, self.started_at = run_id, started_at
        self.started_unix = time.time() - (time.monotonic() - started_at)  # the command's start
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def write(self, state: str, **fields) -> dict:
        """Rewrite the file with `state` and `fields` (the schema's keys), atomically."""
        now = time.monotonic()
        self.next_at = now + INTERVAL_S
        doc = {
            "run_id": self.run_id,
            "run_dir": str(self.path.parent),
            "state": state,
            "exit_code": None,
            "orchestrator_pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": round(self.started_unix, 3),
            "updated_at": time.time(),
            "elapsed_s": round(now - self.started_at, 3),
            **fields,
        }
        replace_text(self.path, dumps(doc, indent=1) + "\n")
        return doc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def is_orchestrator(pid: int) -> bool:
    """Whether `pid` runs a synthgrad command now (a pid is reused once its process is gone)."""
    if not _alive(pid):
        return False
    try:
        return b"synthgrad" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): the pid exists, trust it
        return True


# Fields `render` and `stop` read, and the types they need (None allowed: not known yet).
_TYPES = {"run_id": str, "run_dir": str, "steps": int, "elapsed_s": (int, float), "eta_s": (int, float),
          "samples_per_s": (int, float), "test_accuracy": (int, float), "mean_return": (int, float), "updated_at": (int, float),
          "started_at": (int, float), "orchestrator_pid": int, "exit_code": int, "links": dict}


def _check(doc, path: Path) -> None:
    def bad(why: str):
        return ValueError(f"{path}: not a status file ({why}); a run writes it itself, do not edit it")

    if not isinstance(doc, dict) or doc.get("state") not in STATES:
        raise bad("no known state")
    for key, types in _TYPES.items():
        value = doc.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)
                                  or (isinstance(value, float) and not math.isfinite(value))):
            raise bad(f"{key!r} is {value!r}")
    if not isinstance(doc.get("run_id"), str) or not isinstance(doc.get("agents"), dict):
        raise bad("no run_id or agents")
    if not all(isinstance(row, dict) for row in doc["agents"].values()):
        raise bad("an agent's row is not a table")


def read_status(run_dir: Path) -> dict:
    """status.json of `run_dir`, with `orchestrator_alive` (None on another host) and, when a
    live state's orchestrator is gone, `state` "lost".

    Raises:
        FileNotFoundError: no status.json (not a run directory, or a run made before it).
        ValueError: the file is not a status document (names the file and what is wrong).
    """
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {STATUS_FILE} (not a run directory, or a run made before synthgrad wrote status files)")
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a status file ({err})") from None
    _check(doc, path)
    here = doc.get("host") == socket.gethostname()
    pid = doc.get("orchestrator_pid")
    doc["orchestrator_alive"] = is_orchestrator(pid) if here and isinstance(pid, int) else None
    if doc["state"] in LIVE and doc["orchestrator_alive"] is False:
        doc["state"] = "lost"  # the orchestrator died (SIGKILL, OOM) before it could say so
        doc["eta_s"] = None
    return doc


def newest_run(root: Path) -> Path:
    """The run directory under `root` whose command started last (`started_at` in its
    status.json; every live run rewrites its file each second, so its mtime says nothing).

    Raises:
        FileNotFoundError: `root` holds no run with a status file.
    """
    def started(path: Path) -> float:
        try:
            value = json.loads(path.read_bytes()).get("started_at")
        except (OSError, ValueError, AttributeError):
            value = None
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else path.stat().st_mtime

    found = sorted(Path(root).glob(f"*/{STATUS_FILE}"), key=started)
    if not found:
        raise FileNotFoundError(f"no run with a {STATUS_FILE} under {Path(root).resolve()} (give RUN_DIR, or --runs-dir)")
    return found[-1].parent

"""The run directory: resolved config, per-agent logs, metrics.jsonl, checkpoints, summary."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with every part strict JSON can hold as it is and the rest made so.

    Peers' METRICS meta may hold any msgpack value: bytes become their hex string,
    non-finite floats (NaN, +-inf, which strict parsers refuse) become null, map keys become
    strings, tuples lists; anything else (e.g. a Path) its `str`.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of `value` (see `json_safe`); never NaN or Infinity."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def replace_text(target: Path, text: str) -> Path:
    """Write `target` whole or not at all (a temporary name beside it, then rename), so a
    reader (`synthgrad status`, a viewer) never sees half a file.  Not fsynced: these files
    are reports, rewritten often; checkpoints are durable (agents/runtime/checkpoint.py)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target


class RunDir:
    """`runs/<name>-<time>/` and the files a run writes into it."""

    def __init__(self, root: str | Path, name: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root).resolve() / f"{name}-{stamp}"
        path, n = base, 1
        while path.exists():  # two runs started in the same second get distinct folders
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        self.path = path
        (self.path / "logs").mkdir(parents=True)
        (self.path / "agents").mkdir()
        self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
        self._t0 = time.time()

    @classmethod
    def reopen(cls, path: str | Path) -> RunDir:
        """An existing run directory (`synthgrad run --resume`): metrics.jsonl is appended to."""
        self = cls.__new__(cls)
        self.path = Path(path).resolve()
        self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
        self._t0 = time.time()
        return self

    def log_path(self, agent: str) -> Path:
        return self.path / "logs" / f"{agent}.log"

    def write_json(self, filename: str, data: Any) -> Path:
        """Write `filename` whole or not at all: agents.json is rewritten at every restart
        while others may be reading it."""
        return replace_text(self.path / filename, dumps(data, indent=2) + "\n")

    def record(self, agent: str, step: int, metrics: dict) -> None:
        """Append one metrics line: wall time since the run began, agent, step, values."""
        line = {"t": round(time.time() - self._t0, 4), "agent": agent, "step": step, **metrics}
        self._metrics.write(dumps(line) + "\n")

    def log_tail(self, agent: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(agent).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self._metrics.close()

"""Helpers shared by benchmark scripts: child processes that never outlive a benchmark, readings
from /proc (PSS, CPU time, process trees), the machine's description and markdown tables.

Standard library only: `spawn.py` starts processes by the `spawn` start method, which re-imports
the benchmark's main module (and so this one) in every child; torch must not come with it.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATE = datetime.date.today().isoformat()  # the date results are reported under (docs/results.md)
PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


def synthgrad_command() -> list[str]:
    """The `synthgrad` console script of this interpreter's environment (or `python -m`)."""
    script = Path(sys.executable).with_name("synthgrad")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "synthgrad.orchestrator.cli"]


def log(text: str) -> None:
    """Progress goes to stderr, so that stdout holds only the table and the JSON line."""
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- processes


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies (Linux).

    Used as `preexec_fn` and at the top of child entry points: if the benchmark is killed
    outright (SIGKILL, a CI timeout), a `synthgrad run` it started gets SIGTERM and stops
    its agents itself; nothing keeps running in the background.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum))
        except OSError:
            pass


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that `finally` blocks stop the children first."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


class Child:
    """A subprocess with its output in temporary files, stopped for sure on exit.

    Use as a context manager: leaving the block (normally or by an exception) sends SIGTERM,
    waits `grace_s`, then SIGKILL.  `synthgrad run` answers SIGTERM by stopping every agent
    and removing its sockets, so the grace period is what lets it clean up.
    """

    def __init__(self, cmd: list[str], grace_s: float = 15.0) -> None:
        self.cmd = cmd
        self.grace_s = grace_s
        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=self._err, cwd=REPO, preexec_fn=die_with_parent
        )
        self.pid = self.proc.pid

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()
        self._out.close()
        self._err.close()

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> int:
        """SIGTERM, wait up to `grace_s`, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def wait(self, timeout_s: float) -> int:
        """Wait for a normal exit; on timeout stop it and raise."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(
                f"{' '.join(self.cmd)} did not finish within {timeout_s:.0f} s"
            ) from None

    def stdout(self) -> str:
        self._out.seek(0)
        return self._out.read()

    def stderr_tail(self, lines: int = 20) -> str:
        self._err.seek(0)
        return "\n".join(self._err.read().splitlines()[-lines:])

    def last_json(self) -> dict:
        """The JSON object on the last line of stdout (`synthgrad run --json`)."""
        lines = self.stdout().strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"{' '.join(self.cmd)} exited with {self.proc.returncode}:\n{self.stderr_tail()}"
            )
        return json.loads(lines[-1])


def synthgrad_run(topology: Path, sets: list[str], runs_dir: Path, timeout_s: float, plots: bool = False) -> dict:
    """One `synthgrad run TOPOLOGY --set ...` to its end; its JSON summary (raises on failure).

    Without the run's plots unless `plots`: drawing them costs a few seconds a run, which a
    benchmark of many runs does not need."""
    cmd = [
        *synthgrad_command(),
        "run",
        str(topology),
        "--json",
        "--quiet",
        "--runs-dir",
        str(runs_dir),
        *([] if plots else ["--no-plots"]),
    ]
    cmd += [arg for item in sets for arg in ("--set", item)]
    with Child(cmd) as child:
        child.wait(timeout_s)
        return child.last_json()


class JsonlTail:
    """A JSON-lines file (a run's metrics.jsonl) read as it grows.

    `new()` returns the records completed since the last call; a line still being written
    waits for the next call, and a file not there yet reads as empty.  Incremental, so that
    polling takes no CPU away from the run being measured.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines()]


# ----------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a pid apart from a reused one)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, started: int | None = None) -> bool:
    """True while `pid` exists and is not a zombie (and, if given, started at `started`)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (0 once it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy (not idle) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # guest time is already inside user time


def others_busy_cores(window_s: float = 1.0) -> float:
    """Cores the whole machine kept busy over the next `window_s` seconds, this process aside."""
    t0, busy0, own0 = time.perf_counter(), machine_busy_seconds(), time.process_time()
    time.sleep(window_s)
    wall = time.perf_counter() - t0
    return max(machine_busy_seconds() - busy0 - (time.process_time() - own0), 0.0) / wall


def wait_until_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 2.0):
    """Wait up to `max_wait_s` until other work keeps at most `threshold` cores busy.

    On a machine shared with other people's jobs this gives a measurement its best chance.
    Returns the busy cores last seen (None when `max_wait_s` is 0: no waiting, no sampling).
    """
    if max_wait_s <= 0:
        return None
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = others_busy_cores(window_s)
        if busy <= threshold or time.monotonic() >= deadline:
            return busy


def descendants(root: int) -> list[int]:
    """Every live process below `root` in the process tree (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """PSS and USS (private clean + dirty) in kB from /proc/PID/smaps_rollup; {} if gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[key] = int(rest.split()[0])
    return {
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


# ----------------------------------------------------------------------------- reporting


def machine() -> dict:
    """What the figures were measured on, and how busy the machine was when they were."""
    info = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def commit() -> str:
    """The checked-out commit, with '+dirty' when tracked files differ from it."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return run.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header(script: str, quick: bool) -> dict:
    """The fields every benchmark report starts with."""
    return {
        "benchmark": Path(script).stem,
        "command": " ".join([".venv/bin/python", f"benchmarks/{Path(script).name}", *sys.argv[1:]]),
        "date": DATE,
        "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit(),
        "quick": quick,
    }


def table(headers: list[str], rows: list[list], align: str = "") -> str:
    """A markdown table; `align` gives one of 'l'/'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def finish(report: dict, text: str, as_json: bool) -> None:
    """Print the tables; with --json, then the report as one JSON object on the last line."""
    print(text, flush=True)
    if as_json:
        print(json.dumps(report, default=str), flush=True)


def wait_for(predicate, timeout_s: float, every_s: float = 0.005, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; return it, or raise on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(every_s)

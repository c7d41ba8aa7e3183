"""Soak benchmark: 32 agents for 5 minutes on 2 cores; memory, queues, drops, stalls, restarts.

    .venv/bin/python benchmarks/soak.py                     # 32 agents, 300 s, no faults
    .venv/bin/python benchmarks/soak.py --chaos 20 --json   # SIGKILL a random agent every 20 s
    .venv/bin/python benchmarks/soak.py --quick --json      # 10 agents, 20 s, a kill every 6 s: CI smoke

The network: an MNIST source -> N-2 dense layers of 64 -> head, batch 64, DNI (linear SG
models) between every pair of layers, the labels link (source.y -> head.labels) plain, written
to a temporary directory.  `synthgrad run` trains it with a budget it cannot reach
(run.steps=10**9) and is stopped with SIGINT once --duration seconds of training have passed
(exit code 130; summary.json is still written, and a last checkpoint round is made).

Every --sample seconds (2) the benchmark reads, without disturbing the run:
  memory        VmRSS (/proc/PID/status) of every agent process, by the pids in the run's
                agents.json (re-read each time: a restart changes a pid), of the orchestrator
                and of the fork server.  "warm-up" is the first sample at or after 20% of the
                duration, "end" the last one before SIGINT; growth is (end - warm-up) /
                warm-up per process, over the processes alive at both (a restarted agent is a
                new process), max and median.
  queues        each agent's latest METRICS line in metrics.jsonl (every run.metrics_every_s):
                `queued` (messages waiting to be handed to ZeroMQ), `held` (the source's
                messages kept for a peer that is down) and `parked` (steps waiting for a
                gradient); the maxima over the run.
  stalls        a sample interval in which the source's or the head's reported steps did not
                advance, outside an outage (from a fault's detection minus its silence to its
                rejoin, plus two sample intervals for the pipeline to refill), once the
                pipeline has filled (the head's first step); intervals inside outages are
                counted apart.  "lag" is the source's steps minus the head's in each sample:
                the batches in flight along the chain, plus (with faults) those the head
                never got.
After the run, from summary.json: messages dropped (every agent's `dropped.*` counters, by
reason and in total), rejected, faults, restarts, rejoin times; and the loss check: every fault
is matched by a restart that rejoined, and every agent stopped cleanly (state "stopped").
Then every pid seen is checked gone, the run's ipc directory removed, and the run's checkpoint
folders are listed: one without a manifest.json is a round that never completed but was left
on disk.  The orchestrator's log lines (stderr) go into the JSON (the last 30) and, with
--runs-dir, whole into RUNS_DIR/soak-*/orchestrator-stderr.txt next to the run directory.

--chaos N: every N seconds of training (the last at least N s before the end) one random
non-source agent that is up is killed with SIGKILL (random.Random(--seed)), with
run.max_restarts=1000 and run.checkpoint_every=200 (the restarted agent starts from the
latest checkpoint).  Detection: a kill is seen at once (the process exits), so a fault's
`silent_s` (time since it was last heard) only matters for hangs; it is reported anyway.
Before SIGINT the benchmark waits (at most 60 s) for every killed agent to rejoin.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    Child,
    JsonlTail,
    cmdline,
    descendants,
    exit_on_sigterm,
    finish,
    header,
    is_running,
    log,
    machine,
    start_time,
    synthgrad_command,
    table,
    wait_for,
)

WIDTH = 64
BATCH = 64
SAMPLE_S = 2.0
WARMUP_FRACTION = 0.2
REFILL_INTERVALS = 2  # sample intervals after a rejoin still counted as the outage
CHAOS_SETS = ("run.max_restarts=1000", "run.checkpoint_every=200")
REGISTER_TIMEOUT_S = 300.0  # launch to the first metrics line (32 agents on a busy 2-core host)
REJOIN_WAIT_S = 60.0
STOP_TIMEOUT_S = 180.0
QUEUES = ("queued", "held", "parked")
QUICK = {"agents": 10, "duration": 20.0, "chaos": 6.0}
FULL = {"agents": 32, "duration": 300.0, "chaos": 0.0}


def mb(kb: float) -> float:
    """kB (KiB, as /proc reports) to MB (10**6 bytes)."""
    return kb * 1024 / 1e6


def rss_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of a process in kB (/proc/PID/status); None when it is gone (or a
    zombie, which has no VmRSS line).  RssAnon is the anonymous part (heap, tensors): pages
    a forked agent shares with the fork server count in both."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None
    return int(fields["VmRSS"].split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
        return None


def write_topology(folder: Path, agents: int) -> Path:
    """source -> l1..l(agents-2) -> head, dense layers of WIDTH, DNI, plain labels link."""
    from synthgrad.orchestrator import builder

    run = {
        "name": f"soak-{agents}",
        "steps": 10**9,  # never reached: the run is stopped by SIGINT
        "batch_size": BATCH,
        "eval_every": 0,
        "seed": 0,
        "metrics_every_s": 1.0,
    }
    doc = builder.chain(
        agents - 2, width=WIDTH, mode="dni", sg={"model": "linear"}, labels_mode="none", run=run
    )
    text = (
        f"{agents} agents for benchmarks/soak.py: MNIST source, {agents - 2} dense layers of "
        f"{WIDTH}, head; DNI (linear SG) between layers; stopped by SIGINT."
    )
    return builder.write(doc, folder / f"soak-{agents}.toml", text)


# ----------------------------------------------------------------------------- the run


def read_agents_json(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "agents.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not yet (it is written atomically)
        return None


class Soak:
    """One `synthgrad run` of the soak topology, sampled while it trains."""

    def __init__(self, args, topology: Path, runs: Path) -> None:
        self.args, self.topology, self.runs = args, topology, runs
        self.sets = list(args.set)
        if args.chaos > 0:
            self.sets = [*CHAOS_SETS, *self.sets]
        self.samples: list[dict] = []  # t, rss (name -> kB), pids (name -> pid), steps
        self.processes: dict[int, dict] = {}  # pid -> name, start ticks, rss series [(t, kB)]
        self.latest: dict[str, dict] = {}  # agent -> its latest METRICS line
        self.max_queue: dict[str, dict[str, int]] = {}  # agent -> queue -> max seen
        self.kills: list[dict] = []
        self.down: dict[str, int] = {}  # killed agent -> its incarnation when killed
        self.chooser = random.Random(args.seed)
        self.ipc_dir = None
        self.helpers: dict[int, str] = {}  # orchestrator, fork server

    # --------------------------------------------------------------- sampling
    def _metrics(self, tail: JsonlTail) -> None:
        for line in tail.new():
            name = line.get("agent")
            if name is None or "eval" in line:
                continue
            self.latest[name] = line
            most = self.max_queue.setdefault(name, dict.fromkeys(QUEUES, 0))
            for key in QUEUES:
                if isinstance(line.get(key), int):
                    most[key] = max(most[key], line[key])

    def _sample(self, t: float, agents: dict) -> None:
        rss, pids = {}, {}
        for name, entry in agents["agents"].items():
            pid = entry.get("pid")
            if not isinstance(pid, int):
                continue
            kb = rss_kb(pid)
            pids[name] = pid
            if kb is None:  # killed a moment ago, or not yet replaced in agents.json
                continue
            rss[name] = kb[0]
            proc = self.processes.setdefault(
                pid, {"name": name, "started": start_time(pid), "rss": [], "kind": "agent"}
            )
            proc["rss"].append((t, *kb))
        helpers = {}
        for pid, role in self.helpers.items():
            kb = rss_kb(pid)
            if kb is not None:
                helpers[role] = kb[0]
                proc = self.processes.setdefault(
                    pid, {"name": role, "started": start_time(pid), "rss": [], "kind": "helper"}
                )
                proc["rss"].append((t, *kb))
        steps = {n: self.latest.get(n, {}).get("steps") for n in ("source", "head")}
        queues = {n: {k: line.get(k) for k in QUEUES} for n, line in self.latest.items()}
        self.samples.append(
            {"t": t, "rss": rss, "helpers": helpers, "pids": pids, "steps": steps, "queues": queues}
        )

    def _find_helpers(self, root: int) -> None:
        """The orchestrator and its fork server (the agents' parent, a child of the
        orchestrator whose command line names multiprocessing's forkserver)."""
        self.helpers = {root: "orchestrator"}
        for pid in descendants(root):
            if parent_pid(pid) == root and "forkserver" in cmdline(pid):
                self.helpers[pid] = "fork server"

    # --------------------------------------------------------------- chaos
    def _rejoined(self, agents: dict) -> None:
        for name, born in list(self.down.items()):
            if agents["agents"][name]["incarnation"] > born:
                del self.down[name]
                for kill in self.kills:
                    if kill["agent"] == name and "rejoin_seen_t" not in kill:
                        kill["rejoin_seen_t"] = self.now()

    def _kill_one(self, agents: dict, t: float) -> None:
        up = [
            name
            for name, entry in agents["agents"].items()
            if name != "source" and name not in self.down and is_running(entry["pid"])
        ]
        if not up:
            log(f"  t={t:.0f} s: no agent is up to kill")
            return
        name = self.chooser.choice(sorted(up))
        entry = agents["agents"][name]
        try:
            os.kill(entry["pid"], signal.SIGKILL)
        except ProcessLookupError:
            return
        self.down[name] = entry["incarnation"]
        self.kills.append({"agent": name, "pid": entry["pid"], "t": round(t, 2)})
        log(f"  t={t:.0f} s: SIGKILL {name} (pid {entry['pid']})")

    # --------------------------------------------------------------- main loop
    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> dict:
        args = self.args
        cmd = [*synthgrad_command(), "run", str(self.topology), "--json", "--quiet", "--no-plots"]
        cmd += ["--runs-dir", str(self.runs)]
        cmd += [a for item in self.sets for a in ("--set", item)]
        launched = time.monotonic()
        with Child(cmd, grace_s=60.0) as child:

            def training():
                if child.poll() is not None:
                    raise RuntimeError(
                        f"synthgrad run exited with {child.poll()}:\n{child.stderr_tail()}"
                    )
                run_dir = next(self.runs.iterdir(), None)
                metrics = run_dir / "metrics.jsonl" if run_dir else None
                if metrics and metrics.exists() and metrics.stat().st_size > 0:
                    return run_dir
                return None

            self.run_dir = wait_for(training, REGISTER_TIMEOUT_S, every_s=0.1, what="training")
            self.t0 = time.monotonic()  # training began (the first METRICS line), within 0.1 s
            startup_s = self.t0 - launched
            agents = wait_for(lambda: read_agents_json(self.run_dir), 10, what="agents.json")
            self.ipc_dir = agents["ipc_dir"]
            self._find_helpers(child.pid)
            log(f"training after {startup_s:.1f} s; sampling for {args.duration:.0f} s ...")
            tail = JsonlTail(self.run_dir / "metrics.jsonl")
            kill_at = args.chaos if args.chaos > 0 else None
            next_sample = 0.0
            ended_early = None
            while True:
                t = self.now()
                if child.poll() is not None:
                    ended_early = child.poll()
                    break
                if t >= args.duration:
                    break
                agents = read_agents_json(self.run_dir) or agents
                self._rejoined(agents)
                if kill_at is not None and t >= kill_at:
                    if kill_at <= args.duration - args.chaos:
                        self._kill_one(agents, t)
                    kill_at += args.chaos
                if t >= next_sample:
                    self._metrics(tail)
                    self._sample(t, agents)
                    while next_sample <= t:  # a late turn skips samples, not the clock
                        next_sample += args.sample
                time.sleep(0.2)
            waited = 0.0
            if ended_early is None and self.down:  # let every killed agent rejoin first
                log(f"waiting for {sorted(self.down)} to rejoin ...")
                w0 = time.monotonic()
                while self.down and time.monotonic() - w0 < REJOIN_WAIT_S and child.poll() is None:
                    agents = read_agents_json(self.run_dir) or agents
                    self._rejoined(agents)
                    time.sleep(0.1)
                waited = time.monotonic() - w0
            if ended_early is None:
                self._metrics(tail)
                self._sample(self.now(), read_agents_json(self.run_dir) or agents)
                end_t = self.now()
                log("SIGINT to synthgrad run ...")
                s0 = time.monotonic()
                child.proc.send_signal(signal.SIGINT)
                try:
                    code = child.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    code = child.stop()
                stop_s = time.monotonic() - s0
            else:
                end_t, code, stop_s = self.now(), ended_early, 0.0
            child._err.seek(0)
            stderr = child._err.read()
        self._metrics(tail)
        try:
            summary = json.loads((self.run_dir / "summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as err:  # the orchestrator died hard
            summary = {"error": f"no readable summary.json ({err})", "agents": {}, "faults": []}
        final_agents = read_agents_json(self.run_dir) or agents
        return {
            "startup_s": startup_s,
            "trained_s": end_t,
            "rejoin_wait_s": waited,
            "stop_s": stop_s,
            "exit_code": code,
            "ended_early": ended_early is not None,
            "stderr": stderr,
            "summary": summary,
            "final_agents": final_agents,
        }


# ----------------------------------------------------------------------------- analysis


def memory_report(soak: Soak, duration: float) -> dict:
    """RSS at warm-up and at the end, per process; growth over those alive at both."""
    samples = [s for s in soak.samples if s["rss"]]
    warm = next((s for s in samples if s["t"] >= WARMUP_FRACTION * duration), samples[-1])
    end = samples[-1]

    def growth(before: int, after: int) -> float | None:
        return 100.0 * (after - before) / before if before else None

    rows = {}
    for pid, proc in soak.processes.items():
        series = {t: (kb, anon) for t, kb, anon in proc["rss"]}
        if warm["t"] in series and end["t"] in series:
            (w, wa), (e, ea) = series[warm["t"]], series[end["t"]]
            rows[pid] = {
                "name": proc["name"],
                "kind": proc["kind"],
                "warm_mb": mb(w),
                "end_mb": mb(e),
                "growth_pct": growth(w, e),
                "max_mb": mb(max(kb for _, kb, _ in proc["rss"])),
                "anon_warm_mb": mb(wa),
                "anon_end_mb": mb(ea),
                "anon_growth_pct": growth(wa, ea),
            }
    agents = [r for r in rows.values() if r["kind"] == "agent"]
    growth = [r["growth_pct"] for r in agents]
    anon = [r["anon_growth_pct"] for r in agents if r["anon_growth_pct"] is not None]
    worst = max(agents, key=lambda r: r["growth_pct"]) if agents else None

    def named(name: str) -> dict | None:
        return next((r for r in rows.values() if r["name"] == name), None)

    return {
        "warmup_t_s": warm["t"],
        "end_t_s": end["t"],
        "agent_processes_seen": sum(p["kind"] == "agent" for p in soak.processes.values()),
        "agent_processes_compared": len(agents),
        "agent_warm_mb_median": statistics.median(r["warm_mb"] for r in agents) if agents else None,
        "agent_end_mb_median": statistics.median(r["end_mb"] for r in agents) if agents else None,
        "agent_end_mb_max": max((r["end_mb"] for r in agents), default=None),
        "agents_warm_mb_total": sum(mb(kb) for kb in warm["rss"].values()),
        "agents_end_mb_total": sum(mb(kb) for kb in end["rss"].values()),
        "growth_pct_max": max(growth) if growth else None,
        "growth_pct_median": statistics.median(growth) if growth else None,
        "growth_pct_max_agent": worst["name"] if worst else None,
        "largest_growth": worst,
        "anon_growth_pct_max": max(anon) if anon else None,
        "anon_growth_pct_median": statistics.median(anon) if anon else None,
        "source": named("source"),
        "head": named("head"),
        "orchestrator": named("orchestrator"),
        "fork_server": named("fork server"),
        "by_process": {f"{r['name']}:{pid}": r for pid, r in rows.items()},
    }


def queue_report(soak: Soak) -> dict:
    out = {}
    for key in QUEUES:
        per_agent = {name: most[key] for name, most in soak.max_queue.items()}
        worst = max(per_agent, key=per_agent.get) if per_agent else None
        most = per_agent[worst] if worst else 0
        out[key] = {
            "max": most,
            "max_agent": worst if most else None,
            "median_of_agent_max": statistics.median(per_agent.values()) if per_agent else 0,
        }
    return out


def outages(summary: dict, refill_s: float) -> list[tuple[float, float]]:
    """Each fault's outage in the benchmark's clock: from its last heartbeat to its rejoin,
    plus `refill_s`; a fault that never rejoined lasts to the end."""
    spans = []
    for fault in summary.get("faults", []):
        start = fault["t"] - fault.get("silent_s", 0.0)
        rejoined = fault.get("rejoined_after_s")
        end = fault["t"] + rejoined + refill_s if rejoined is not None else float("inf")
        spans.append((start, end))
    return spans


def stall_report(soak: Soak, summary: dict, interval_s: float) -> dict:
    """Stalls, counted once the pipeline has filled (the head has taken a step: before that
    it waits for the first batch to cross every layer); and the pipeline's lag, the source's
    steps minus the head's, in each sample from then on."""
    spans = outages(summary, REFILL_INTERVALS * interval_s)
    stalls, in_outage, intervals = [], 0, 0
    filled = [s for s in soak.samples if (s["steps"].get("head") or 0) > 0]
    fill_t = filled[0]["t"] if filled else None
    lags = [s["steps"]["source"] - s["steps"]["head"] for s in filled if s["steps"].get("source")]
    for before, after in itertools.pairwise(filled):
        stuck = [
            name
            for name in ("source", "head")
            if before["steps"].get(name) is not None
            and after["steps"].get(name) is not None
            and after["steps"][name] <= before["steps"][name]
        ]
        intervals += 1
        if not stuck:
            continue
        if any(start < after["t"] and before["t"] < end for start, end in spans):
            in_outage += 1
        else:
            stalls.append(
                {"from_t": round(before["t"], 2), "to_t": round(after["t"], 2), "agents": stuck}
            )
    return {
        "pipeline_filled_t_s": fill_t,
        "intervals": intervals,
        "stalls": len(stalls),
        "stalled_in_outages": in_outage,
        "list": stalls,
        "lag_steps_median": statistics.median(lags) if lags else None,
        "lag_steps_max": max(lags) if lags else None,
    }


def drop_report(summary: dict) -> dict:
    by_key, by_reason, rejected = {}, {}, {}
    for name, agent in summary.get("agents", {}).items():
        for key, n in agent.get("dropped", {}).items():
            by_key[f"{name}:{key}"] = n
            reason = key.split(".", 1)[0]
            by_reason[reason] = by_reason.get(reason, 0) + n
        for key, n in agent.get("rejected", {}).items():
            rejected[key] = rejected.get(key, 0) + n
    for key, n in summary.get("control_rejected", {}).items():
        rejected[f"control.{key}"] = rejected.get(f"control.{key}", 0) + n
    return {
        "total": sum(by_reason.values()),
        "by_reason": dict(sorted(by_reason.items())),
        "by_agent_and_key": dict(sorted(by_key.items(), key=lambda kv: -kv[1])),
        "rejected_total": sum(rejected.values()),
        "rejected_by_reason": rejected,
    }


def fault_report(soak: Soak, result: dict) -> dict:
    summary = result["summary"]
    faults = summary.get("faults", [])
    rejoins = [f["rejoined_after_s"] for f in faults if f.get("rejoined_after_s") is not None]
    silent = [f["silent_s"] for f in faults]
    states = {n: a.get("state") for n, a in summary.get("agents", {}).items()}
    not_stopped = {n: s for n, s in states.items() if s != "stopped"}
    unmatched = [f for f in faults if not f.get("restart") or f.get("rejoined_after_s") is None]
    killed = [k["agent"] for k in soak.kills]
    kill_faults = [f["agent"] for f in faults if f["cause"] == "was killed by SIGKILL"]
    matched = (
        not unmatched
        and len(faults) == summary.get("restarts", -1)
        and not not_stopped
        and kill_faults == killed
    )
    return {
        "kills": soak.kills,
        "faults": len(faults),
        "faults_not_ours": [f for f in faults if f["cause"] != "was killed by SIGKILL"],
        "restarts": summary.get("restarts", 0),
        "restarts_by_agent": {
            n: a["restarts"] for n, a in summary.get("agents", {}).items() if a.get("restarts")
        },
        "downtime_s_total": sum(
            a.get("downtime_s", 0.0) for a in summary.get("agents", {}).values()
        ),
        "rejoin_s_median": statistics.median(rejoins) if rejoins else None,
        "rejoin_s_max": max(rejoins) if rejoins else None,
        "silent_s_median": statistics.median(silent) if silent else None,
        "silent_s_max": max(silent) if silent else None,
        "unmatched_faults": unmatched,
        "agents_not_stopped": not_stopped,
        "kills_matched_by_faults": kill_faults == killed,
        "no_uncounted_loss": matched,
    }


def cleanup_report(soak: Soak) -> dict:
    """After `synthgrad run` has exited: every process seen must go (within 10 s)."""

    def alive() -> list[str]:
        return [
            f"{p['name']}:{pid}"
            for pid, p in soak.processes.items()
            if p["started"] is not None and is_running(pid, p["started"])
        ]

    try:
        wait_for(lambda: not alive(), 10.0, every_s=0.05, what="the run's processes' exit")
    except TimeoutError:
        pass
    left = alive()
    for entry in left:  # report them, and do not leave them running
        try:
            os.kill(int(entry.rpartition(":")[2]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    folders = sorted(p for p in (soak.run_dir / "checkpoints").glob("[0-9]*") if p.is_dir())
    return {
        "checkpoint_folders": len(folders),
        "checkpoint_folders_without_manifest": [
            {"folder": p.name, "files": sorted(f.name for f in p.iterdir())}
            for p in folders
            if not (p / "manifest.json").exists()
        ],
        "pids_checked": len(soak.processes),
        "alive_after": left,
        "ipc_dir": soak.ipc_dir,
        "ipc_dir_gone": soak.ipc_dir is not None and not os.path.exists(soak.ipc_dir),
    }


# ----------------------------------------------------------------------------- reporting


def fmt(value, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def ended(run: dict) -> str:
    """SIGINT as planned, or the first line of the run's error (summary.json)."""
    if run.get("error"):
        lines = [line.strip() for line in run["error"].strip().splitlines() if line.strip()]
        last = f" ... {lines[-1][:160]}" if len(lines) > 1 else ""
        return f"failed: {lines[0]}{last}"
    if run.get("interrupted"):
        return f"stopped by {run['interrupted']}"
    return "exited by itself"


def report_text(report: dict) -> str:
    mem, q, st, dr, fl, cl = (
        report[k] for k in ("memory", "queues", "stalls", "dropped", "faults", "cleanup")
    )
    run = report["run"]
    overview = table(
        ["measure", "value"],
        [
            ["agents (processes)", report["agents"]],
            ["training, s (SIGINT after)" if not run["ended_early"] else "training, s (then the run failed)",
             fmt(run["trained_s"])],
            ["how the run ended", ended(run)],
            ["start-up to training, s", fmt(run["startup_s"])],
            ["chaos: SIGKILL every, s", fmt(report["chaos_s"], ".0f") if report["chaos_s"] else "off"],
            ["source steps / head steps", f"{run['source_steps']:,} / {run['head_steps']:,}"],
            ["samples (every ~s)", f"{len(report['samples'])} ({report['sample_s']:g})"],
            ["exit code (130 = SIGINT)", run["exit_code"]],
            ["stop, s (SIGINT to exit)", fmt(run["stop_s"], ".2f")],
            ["checkpoints completed", run["checkpoints"]],
        ],
        align="lr",
    )  # fmt: skip

    def row(label: str, r: dict | None) -> list:
        if r is None:
            return [label, "n/a", "n/a", "n/a", "n/a"]
        return [
            label,
            fmt(r["warm_mb"]),
            fmt(r["end_mb"]),
            fmt(r["max_mb"]),
            fmt(r["growth_pct"], "+.1f"),
        ]

    memory = table(
        ["process (VmRSS)", f"MB at warm-up (t={mem['warmup_t_s']:.0f} s)", f"MB at end (t={mem['end_t_s']:.0f} s)",
         "MB max", "growth %"],
        [["agent, median", fmt(mem["agent_warm_mb_median"]), fmt(mem["agent_end_mb_median"]), "-",
          fmt(mem["growth_pct_median"], "+.1f")],
         row(f"agent, largest growth ({mem['growth_pct_max_agent']})", mem["largest_growth"]),
         row("source", mem["source"]), row("head", mem["head"]),
         row("orchestrator", mem["orchestrator"]), row("fork server", mem["fork_server"]),
         ["all agents, sum", fmt(mem["agents_warm_mb_total"]), fmt(mem["agents_end_mb_total"]), "-", "-"]],
    )  # fmt: skip
    compared = (
        f"growth over the {mem['agent_processes_compared']} agent processes alive from warm-up to the end "
        f"({mem['agent_processes_seen']} agent processes seen): max {fmt(mem['growth_pct_max'], '+.1f')}%, "
        f"median {fmt(mem['growth_pct_median'], '+.1f')}%; of the anonymous part (RssAnon): "
        f"max {fmt(mem['anon_growth_pct_max'], '+.1f')}%, median {fmt(mem['anon_growth_pct_median'], '+.1f')}%"
    )
    queues = table(
        ["queue (METRICS)", "max depth", "agent", "median of per-agent max"],
        [
            [k, q[k]["max"], q[k]["max_agent"] or "-", fmt(q[k]["median_of_agent_max"], "g")]
            for k in QUEUES
        ],
    )
    reasons = ", ".join(f"{k} {n:,}" for k, n in dr["by_reason"].items()) or "none"
    top = ", ".join(f"{k} {n:,}" for k, n in list(dr["by_agent_and_key"].items())[:5]) or "-"
    rejected = ", ".join(f"{k} {n:,}" for k, n in dr["rejected_by_reason"].items()) or "none"
    health = table(
        ["measure", "value"],
        [
            ["messages dropped (summary.json), total", f"{dr['total']:,}"],
            ["  by reason", reasons],
            ["  largest", top],
            ["messages rejected, total", f"{dr['rejected_total']:,} ({rejected})"],
            [f"stalls (source or head idle for a ~{report['sample_s']:g} s interval, outside outages)",
             f"{st['stalls']} of {st['intervals']} intervals"],
            ["  intervals without progress inside outages", st["stalled_in_outages"]],
            ["pipeline filled (head's first step), t s", fmt(st["pipeline_filled_t_s"])],
            ["lag, source steps - head steps: median / max",
             f"{fmt(st['lag_steps_median'], 'g')} / {fmt(st['lag_steps_max'], 'g')}"],
            ["kills (SIGKILL) / faults / restarts", f"{len(fl['kills'])} / {fl['faults']} / {fl['restarts']}"],
            ["faults not caused by the benchmark", len(fl["faults_not_ours"])],
            ["detection: silent_s median / max", f"{fmt(fl['silent_s_median'], '.2f')} / {fmt(fl['silent_s_max'], '.2f')}"],
            ["rejoin after fault, s: median / max", f"{fmt(fl['rejoin_s_median'], '.2f')} / {fmt(fl['rejoin_s_max'], '.2f')}"],
            ["downtime, agent-seconds", fmt(fl["downtime_s_total"], ".1f")],
            ["every fault restarted and rejoined; all agents stopped", "yes" if fl["no_uncounted_loss"] else "NO"],
            ["checkpoint folders left without a manifest", len(cl["checkpoint_folders_without_manifest"])],
            ["processes alive after exit / ipc dir removed",
             f"{len(cl['alive_after'])} of {cl['pids_checked']} / {'yes' if cl['ipc_dir_gone'] else 'NO'}"],
        ],
        align="lr",
    )  # fmt: skip
    verdict = (
        "0 messages lost without being counted: every fault in summary.json is matched by a restart "
        "that rejoined, and all agents finished"
        if fl["no_uncounted_loss"]
        else "loss check FAILED: " + json.dumps(
            {"unmatched_faults": fl["unmatched_faults"], "agents_not_stopped": fl["agents_not_stopped"],
             "kills_matched_by_faults": fl["kills_matched_by_faults"]}
        )
    )  # fmt: skip
    return "\n\n".join([overview, memory, compared, queues, health, verdict])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 agents, 20 s, a kill every 6 s: a smoke test"
    )
    parser.add_argument("--agents", type=int, help="agents in the chain (default 32, quick 10)")
    parser.add_argument(
        "--duration", type=float, help="seconds of training before SIGINT (default 300, quick 20)"
    )
    parser.add_argument(
        "--chaos",
        type=float,
        metavar="N",
        help="SIGKILL a random agent every N s (0 = off; quick 6)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the chaos choices")
    parser.add_argument("--sample", type=float, default=SAMPLE_S, help="seconds between samples")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="passed to synthgrad run"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        help="keep the run directory under this folder (default: a temp dir)",
    )
    parser.add_argument(
        "--json", action="store_true", help="also print the report as one JSON line"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    defaults = QUICK if args.quick else FULL
    args.agents = args.agents or defaults["agents"]
    args.duration = args.duration if args.duration is not None else defaults["duration"]
    args.chaos = args.chaos if args.chaos is not None else defaults["chaos"]
    if args.agents < 3:
        parser.error("--agents must be at least 3 (source, a layer, head)")
    report = {
        **header(__file__, args.quick),
        "machine": machine(),
        "agents": args.agents,
        "duration_s": args.duration,
        "chaos_s": args.chaos,
        "seed": args.seed,
        "sample_s": args.sample,
        "layer_width": WIDTH,
        "batch_size": BATCH,
    }
    with tempfile.TemporaryDirectory(prefix="sg-soak-") as tmp:
        workdir = Path(tmp)
        if args.runs_dir is not None:
            args.runs_dir.mkdir(parents=True, exist_ok=True)
            runs = Path(tempfile.mkdtemp(prefix="soak-", dir=args.runs_dir))
        else:
            runs = workdir / "runs"
            runs.mkdir()
        topology = write_topology(workdir, args.agents)
        soak = Soak(args, topology, runs)
        report["sets"] = soak.sets
        log(f"soak: {args.agents} agents, {args.duration:.0f} s, chaos {args.chaos or 'off'}")
        result = soak.run()
        cleanup = cleanup_report(soak)
        stderr = result["stderr"].splitlines()
        if args.runs_dir is not None:  # the orchestrator's log lines, next to its run dir
            (runs / "orchestrator-stderr.txt").write_text(result["stderr"])
        summary = result["summary"]
        report.update(
            run={
                "run_dir": str(soak.run_dir) if args.runs_dir is not None else None,
                "startup_s": result["startup_s"],
                "trained_s": result["trained_s"],
                "rejoin_wait_s": result["rejoin_wait_s"],
                "stop_s": result["stop_s"],
                "exit_code": result["exit_code"],
                "ended_early": result["ended_early"],
                "interrupted": summary.get("interrupted"),
                "error": summary.get("error"),
                "source_steps": summary["agents"].get("source", {}).get("steps", 0),
                "head_steps": summary["agents"].get("head", {}).get("steps", 0),
                "checkpoints": len(summary.get("checkpoints", [])),
                "stderr_lines": len(stderr),
                "stderr_tail": stderr[-30:],
            },
            memory=memory_report(soak, args.duration),
            queues=queue_report(soak),
            stalls=stall_report(soak, summary, args.sample),
            dropped=drop_report(summary),
            faults=fault_report(soak, result),
            cleanup=cleanup,
            sampled={
                name: sum(name in s["rss"] for s in soak.samples)
                for name in summary["agents"]
            },
            metrics_seen=sorted(soak.max_queue),
            processes={
                str(pid): {"name": p["name"], "kind": p["kind"], "started": p["started"]}
                for pid, p in soak.processes.items()
            },
            samples=[
                {"t": round(s["t"], 2), "steps": s["steps"],
                 "rss_mb_total": round(sum(mb(kb) for kb in s["rss"].values()), 1),
                 "queued_total": sum((v.get("queued") or 0) for v in s["queues"].values())}
                for s in soak.samples
            ],
            summary_faults=summary.get("faults", []),
        )  # fmt: skip
    report["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    finish(report, report_text(report), args.json)
    ok = (
        result["exit_code"] == 130
        and not result["ended_early"]
        and report["faults"]["no_uncounted_loss"]
        and not cleanup["alive_after"]
        and cleanup["ipc_dir_gone"]
    )
    if not ok:
        log(
            f"soak: the run did not end as it should (exit code {result['exit_code']}):\n"
            + "\n".join(stderr[-30:])
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Spawn benchmark: how fast 16 agents come up, and what memory each extra agent costs.

    .venv/bin/python benchmarks/spawn.py                  # 16 agents, with the comparisons (~2 min)
    .venv/bin/python benchmarks/spawn.py --json           # tables, then one JSON line
    .venv/bin/python benchmarks/spawn.py --wait-quiet 300  # on a shared machine
    .venv/bin/python benchmarks/spawn.py --quick --json   # 4 agents, one run each: CI smoke

Fork server (`synthgrad run`): a topology of N agents, a source, N-2 dense layers of 32 and a
head, written to a temporary directory.
  registration  wall time from launching `synthgrad run` (Popen) until agents.json appears in
                its run directory: the supervisor writes it once every agent has registered.
                Median (and best) of --repeats runs of 5 training steps, each started when
                the machine is quiet if --wait-quiet is given; those runs also give the run's
                own clocks (summary timings, all from the command's start: spawn_s when
                every agent was launched, registered_s when every one had said HELLO).
  memory        one more run, with run.steps=10**9.  The moment agents.json appears the
                orchestrator is paused (SIGSTOP) so that it cannot send START: every agent is
                registered and none trains; some have had their welcome and built their (tiny)
                modules, the source may have loaded MNIST.  PSS and USS (private pages) come
                from /proc/PID/smaps_rollup of every process of the run's tree; then SIGCONT,
                and a second sample --settle seconds later, while it trains.  Then SIGTERM to
                `synthgrad run`, which must stop everything: each process is checked gone.
  per extra     the median PSS of the agents other than the source, and (full mode) the
  agent         marginal cost: (PSS of the tree with N agents - with 4) / (N - 4), both
                without the source (its data makes it a fixed cost, loaded or not when
                sampled).  Forked processes share pages and PSS splits each shared page among
                its sharers, so the marginal figure is the honest one; the target is checked
                against it.
Spawn method: the same N processes started by multiprocessing's `spawn` start method, each
importing what the fork server preloads (synthgrad.orchestrator.launcher.PRELOAD) and
setting one torch thread; time from the first start() until all say they are ready, and PSS
of each while all are alive.  (An earlier measurement on this machine gave 33 s and 149 MB for 16
such processes importing torch, zmq, msgpack and numpy only.)
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import wait as wait_connections
from pathlib import Path

from _common import (
    Child,
    cmdline,
    descendants,
    die_with_parent,
    exit_on_sigterm,
    finish,
    header,
    is_running,
    log,
    machine,
    memory_kb,
    start_time,
    synthgrad_command,
    table,
    wait_for,
    wait_until_quiet,
)

# Only the standard library and _common above: `spawn` children re-import this module.

TARGET_READY_S = 3.0
TARGET_EXTRA_MB = 30.0
CLEANUP_TIMEOUT_S = 10.0
TIMINGS = ("launch_to_registered_s", "registered_s", "spawn_s", "ready_s")
VERDICT = {True: "met", False: "missed", None: "not judged (--quick)"}
BASE_AGENTS = 4  # the smaller run the marginal memory per agent is taken against
LAYER_WIDTH = 32


def mb(kb: float) -> float:
    """kB (KiB, as /proc reports) to MB (10**6 bytes)."""
    return kb * 1024 / 1e6


def write_topology(folder: Path, agents: int) -> Path:
    """A chain of `agents` agents: source -> l1..l(agents-2) -> head."""
    from synthgrad.orchestrator import builder  # here, not above: spawn children re-import us

    run = {"name": f"spawn-{agents}", "steps": 5, "eval_every": 0, "eval_batch_size": 10000}
    doc = builder.chain(agents - 2, width=LAYER_WIDTH, run=run)
    header = (
        f"{agents} agents for benchmarks/spawn.py: source, {agents - 2} dense layers of "
        f"{LAYER_WIDTH}, head."
    )
    return builder.write(doc, folder / f"spawn-{agents}.toml", header)


# ----------------------------------------------------------------------------- fork server


def launch(topology: Path, runs: Path, sets: list[str]) -> Child:
    cmd = [*synthgrad_command(), "run", str(topology), "--json", "--quiet", "--no-plots", "--runs-dir", str(runs)]
    return Child(cmd + [arg for item in sets for arg in ("--set", item)])


def await_registration(child: Child, runs: Path, timeout_s: float = 120.0) -> dict:
    """Wait until the run's agents.json can be read; returns it (agent name -> pid inside)."""

    def agents_json():
        if child.poll() is not None:
            raise RuntimeError(f"synthgrad run exited with {child.poll()}:\n{child.stderr_tail()}")
        run_dir = next(runs.iterdir(), None)
        try:
            return json.loads((run_dir / "agents.json").read_text()) if run_dir else None
        except (FileNotFoundError, json.JSONDecodeError):  # not yet, or half written
            return None

    return wait_for(agents_json, timeout_s, what="agents.json")


def registration_run(topology: Path, workdir: Path) -> dict:
    """Launch a 5-step run; time to agents.json, and the run's own timings once it ends."""
    runs = Path(tempfile.mkdtemp(dir=workdir))
    t0 = time.perf_counter()
    with launch(topology, runs, []) as child:
        await_registration(child, runs)
        ready_s = time.perf_counter() - t0
        child.wait(timeout_s=180)
        timings = child.last_json()["timings"]
    return {"launch_to_registered_s": ready_s, **{k: timings[k] for k in TIMINGS[1:]}}


def roles(root: int, agents: dict[str, int]) -> dict[int, str]:
    """Name every process of the run's tree: the orchestrator, agents, the fork server."""
    named = {root: "orchestrator"} | {pid: f"agent:{name}" for name, pid in agents.items()}
    helpers = {"forkserver": "fork server", "resource_tracker": "resource tracker"}
    for pid in descendants(root):
        if pid not in named:
            line = cmdline(pid)
            named[pid] = next((role for key, role in helpers.items() if key in line), "other")
    return named


def memory_run(topology: Path, workdir: Path, settle_s: float) -> dict:
    """PSS of the run's processes before and while training; then SIGTERM and a cleanup check."""
    runs = Path(tempfile.mkdtemp(dir=workdir))
    with launch(topology, runs, ["run.steps=1000000000"]) as child:
        agents = {n: e["pid"] for n, e in await_registration(child, runs)["agents"].items()}
        # Pause the orchestrator while sampling: it cannot send START, so nothing trains yet
        # (agents already welcomed have built their modules and wait for START).
        os.kill(child.pid, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            before = {pid: memory_kb(pid) for pid in agents.values()}
            sample_s = time.perf_counter() - t0
            names = roles(child.pid, agents)
            before.update({pid: memory_kb(pid) for pid in names if pid not in before})
        finally:
            os.kill(child.pid, signal.SIGCONT)
        started = {pid: start_time(pid) for pid in names}
        time.sleep(settle_s)
        training = {pid: memory_kb(pid) for pid in names}
        t1 = time.perf_counter()
        code = child.stop()
        stop_s = time.perf_counter() - t1

    def running() -> list[int]:
        return [pid for pid in names if started[pid] is not None and is_running(pid, started[pid])]

    # `synthgrad run` has exited; its fork server notices (its pipe to the orchestrator
    # closes) and exits by itself, a moment later.  Wait for the whole tree to be gone.
    outlived = sorted({names[pid] for pid in running()})
    try:
        wait_for(lambda: not running(), CLEANUP_TIMEOUT_S, every_s=0.02, what="the tree's exit")
    except TimeoutError:
        pass
    gone_s = time.perf_counter() - t1
    left = running()
    for pid in left:  # report them, and do not leave them running
        os.kill(pid, signal.SIGKILL)

    source = agents.pop("source")  # the rest are the layers and the head
    rest = [pid for pid, role in names.items() if not role.startswith("agent:")]

    def pss(sample: dict, pids) -> list[float]:
        return [mb(sample[pid].get("pss", 0)) for pid in pids]

    return {
        "agents": len(agents) + 1,
        "sample_s": sample_s,
        "agent_pss_mb": statistics.median(pss(before, agents.values())),
        "agent_uss_mb": statistics.median(mb(before[p]["uss"]) for p in agents.values()),
        "agent_pss_training_mb": statistics.median(pss(training, agents.values())),
        "source_pss_mb": mb(before[source]["pss"]),
        "source_pss_training_mb": mb(training[source].get("pss", 0)),
        "by_role_pss_mb": {names[pid]: mb(before[pid].get("pss", 0)) for pid in rest},
        # Without the source, whose data may or may not be loaded when sampled (it loads
        # MNIST on its welcome): the marginal cost per agent is taken on this sum.
        "tree_pss_without_source_mb": sum(pss(before, [*agents.values(), *rest])),
        "tree_pss_mb": sum(pss(before, names)),
        "tree_pss_training_mb": sum(pss(training, names)),
        "stop": {
            "signal": "SIGTERM",
            "exit_code": code,
            "stop_s": stop_s,
            "tree_gone_s": gone_s,
            "pids_checked": len(names),
            "outlived_the_run": outlived,
            f"left_running_after_{CLEANUP_TIMEOUT_S:.0f}_s": [names[p] for p in left],
        },
    }


# ----------------------------------------------------------------------------- spawn method


def _spawned(conn, preload: list[str]) -> None:
    """A `spawn` child: import what an agent needs, say so, wait to be told to exit."""
    die_with_parent(signal.SIGKILL)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:  # as multiprocessing's preload does: skip what is not installed
            pass
    sys.modules["torch"].set_num_threads(1)
    conn.send(os.getpid())
    try:
        conn.recv()
    except EOFError:
        pass


def spawn_method(count: int, preload: list[str], timeout_s: float = 300.0) -> dict:
    """Start `count` processes by the `spawn` start method; time until all are ready, PSS."""
    ctx = multiprocessing.get_context("spawn")
    procs, conns = [], []
    t0 = time.perf_counter()
    try:
        for _ in range(count):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_spawned, args=(theirs, preload), daemon=True)
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(mine)
        waiting = set(conns)
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(waiting)} spawned processes not ready after {timeout_s:.0f} s"
                )
            for conn in wait_connections(list(waiting), timeout=1.0):
                conn.recv()  # EOFError here means a child died while importing
                waiting.discard(conn)
        ready_s = time.perf_counter() - t0
        mem = [memory_kb(proc.pid) for proc in procs]
    finally:
        for conn in conns:
            try:
                conn.send("exit")
            except OSError:
                pass
            conn.close()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    return {
        "agents": count,
        "ready_s": ready_s,
        "pss_mb": statistics.median(mb(m["pss"]) for m in mem),
        "uss_mb": statistics.median(mb(m["uss"]) for m in mem),
        "total_pss_mb": mb(sum(m["pss"] for m in mem)),
    }


# ----------------------------------------------------------------------------- main


def fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def report_text(report: dict) -> str:
    reg, mem, sp, extra = (
        report[k] for k in ("registration", "memory", "spawn_method", "per_extra_agent")
    )
    startup = table(
        ["launcher", "agents", f"launch to all registered, s (median of {len(reg['runs'])})", "best",
         "run's registered_s", "run's spawn_s", "target", "met"],
        [["fork server (`synthgrad run`)", reg["agents"], fmt(reg["launch_to_registered_s"]),
          fmt(reg["best_launch_to_registered_s"]), fmt(reg["registered_s"]), fmt(reg["spawn_s"]),
          f"<= {TARGET_READY_S:.0f} s", VERDICT[reg["met"]]],
         ["`spawn` start method, same imports", sp["agents"], fmt(sp["ready_s"]), "-", "-", "-", "-", "-"]],
    )  # fmt: skip
    memory = table(
        ["process", "PSS MB, registered", "USS MB", f"PSS MB {report['settle_s']:.0f} s later (training)"],
        [[f"agent other than the source, median of {mem['agents'] - 1}", fmt(mem["agent_pss_mb"], ".1f"),
          fmt(mem["agent_uss_mb"], ".1f"), fmt(mem["agent_pss_training_mb"], ".1f")],
         ["source agent", fmt(mem["source_pss_mb"], ".1f"), "-", fmt(mem["source_pss_training_mb"], ".1f")],
         *[[role, fmt(v, ".1f"), "-", "-"] for role, v in sorted(mem["by_role_pss_mb"].items())],
         [f"whole tree ({mem['agents']} agents)", fmt(mem["tree_pss_mb"], ".1f"), "-",
          fmt(mem["tree_pss_training_mb"], ".1f")],
         ["`spawn` start method, per process (median)", fmt(sp["pss_mb"], ".1f"), fmt(sp["uss_mb"], ".1f"), "-"]],
    )  # fmt: skip
    verdict = (
        f"memory per extra agent: {fmt(extra['mb'], '.1f')} MB ({extra['measure']}); "
        f"target <= {TARGET_EXTRA_MB:.0f} MB: {VERDICT[extra['met']]}"
    )
    stop = mem["stop"]
    left = stop[f"left_running_after_{CLEANUP_TIMEOUT_S:.0f}_s"]
    cleanup = (
        f"SIGTERM to `synthgrad run`: it exited with {stop['exit_code']} after {stop['stop_s']:.2f} s;"
        f" still running then: {', '.join(stop['outlived_the_run']) or 'nothing'}; all "
        f"{stop['pids_checked']} processes of its tree gone after {stop['tree_gone_s']:.2f} s; "
        f"left running after {CLEANUP_TIMEOUT_S:.0f} s (killed): {', '.join(left) or 'none'}"
    )
    return "\n\n".join([startup, memory, verdict, cleanup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="4 agents, one run each: a smoke test for CI"
    )
    parser.add_argument("--agents", type=int, help="agents in the run (default 16, quick 4)")
    parser.add_argument(
        "--repeats", type=int, help="registration runs, median taken (default 3, quick 1)"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between the two memory samples"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each timed launch wait up to S seconds for other work to use <= 0.25 cores",
    )
    parser.add_argument(
        "--json", action="store_true", help="also print the report as one JSON line"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    from synthgrad.orchestrator.launcher import PRELOAD  # light: multiprocessing only

    agents = args.agents or (BASE_AGENTS if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 3)
    if agents < 3:
        parser.error("--agents must be at least 3 (source, a layer, head)")
    report = {
        **header(__file__, args.quick),
        "machine": machine(),
        "settle_s": args.settle,
        "repeats": repeats,
        "wait_quiet_s": args.wait_quiet,
    }
    with tempfile.TemporaryDirectory(prefix="sg-spawn-") as tmp:
        workdir = Path(tmp)
        topology = write_topology(workdir, agents)
        runs = []
        for r in range(repeats):
            log(f"registration run {r + 1}/{repeats} ({agents} agents) ...")
            busy = wait_until_quiet(args.wait_quiet)
            runs.append({**registration_run(topology, workdir), "others_before": busy})
        registration = {k: statistics.median(run[k] for run in runs) for k in TIMINGS}
        registration.update(
            best_launch_to_registered_s=min(run["launch_to_registered_s"] for run in runs),
            agents=agents,
            runs=runs,
            target_s=TARGET_READY_S,
            met=None if args.quick else registration["launch_to_registered_s"] <= TARGET_READY_S,
        )
        log("memory run ...")
        memory = memory_run(topology, workdir, args.settle)
        extra = {
            "measure": f"median PSS of an agent other than the source, {agents} agents",
            "mb": memory["agent_pss_mb"],
        }
        if agents > BASE_AGENTS and not args.quick:
            log(f"memory run with {BASE_AGENTS} agents, for the marginal cost ...")
            base = memory_run(write_topology(workdir, BASE_AGENTS), workdir, args.settle)
            extra = {
                "measure": f"marginal: (tree PSS with {agents} agents - with {BASE_AGENTS}, "
                f"source left out) / {agents - BASE_AGENTS}",
                "mb": (memory["tree_pss_without_source_mb"] - base["tree_pss_without_source_mb"])
                / (agents - BASE_AGENTS),
                "base_run": base,
            }
        extra.update(
            target_mb=TARGET_EXTRA_MB, met=None if args.quick else extra["mb"] <= TARGET_EXTRA_MB
        )
    log(f"{agents} processes by the spawn start method ...")
    busy = wait_until_quiet(args.wait_quiet)
    report.update(
        registration=registration,
        memory=memory,
        per_extra_agent=extra,
        spawn_method={**spawn_method(agents, PRELOAD), "others_before": busy},
    )
    report["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    finish(report, report_text(report), args.json)


if __name__ == "__main__":
    sys.exit(main())

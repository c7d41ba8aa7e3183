"""What faults cost a decoupled run: accuracy under two kills, hang detection, time to rejoin.

For each repeat, in one invocation, three runs of examples/mnist_cdni.toml with the same seed
and budget (docs/fault-tolerance.md):

- clean: no fault;
- two kills: kill -9 of a random layer agent at about 30% and 60% of the clean run's wall
  time (the second one after the first has been replaced);
- hang: SIGSTOP of a random layer agent at about 40%, with `run.hang_timeout_s = 2`.

It reports each run's test accuracy, the gap of each faulty run to its clean twin, the steps
done (the budget must be reached), the restarts, the time from a kill to the agent running
again (`rejoined_after_s`), and for the hang how long past the timeout it was detected
(`silent_s` minus the timeout).  The issue's targets: accuracy within 1 point under two
faults, detection within 2 s past the timeout, rejoined within 3 s.

    .venv/bin/python benchmarks/faults.py              # 3 repeats of 2000 steps (~6 min)
    .venv/bin/python benchmarks/faults.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Child, exit_on_sigterm, finish, header, log, synthgrad_command, table  # noqa: E402

TOPOLOGY = REPO / "examples" / "mnist_cdni.toml"
LAYERS = ("l1", "l2", "l3")
HANG_TIMEOUT_S = 2.0
RUN_TIMEOUT_S = 600.0


def _agents(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "agents.json").read_text())["agents"]
    except (FileNotFoundError, ValueError):
        return {}


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.05)
    return value


def _one(sets: list[str], runs_dir: Path, faults) -> dict:
    """One `synthgrad run`; `faults(run_dir, t0)` disturbs it once it trains (None: clean)."""
    cmd = [*synthgrad_command(), "run", str(TOPOLOGY), "--json", "--quiet", "--no-plots", "--runs-dir", str(runs_dir)]
    cmd += [arg for item in sets for arg in ("--set", item)]
    with Child(cmd) as child:
        metrics = lambda: next((p for p in runs_dir.glob("*/metrics.jsonl") if p.stat().st_size), None)  # noqa: E731
        path = _wait(metrics, 120, "training")
        t0 = time.monotonic()
        done = faults(path.parent, t0) if faults else []
        child.wait(RUN_TIMEOUT_S)
        summary = child.last_json()
    summary["disturbed"] = done
    return summary


def _kills(wall_s: float, rng: random.Random):
    def disturb(run_dir: Path, t0: float) -> list[str]:
        killed = []
        for share in (0.3, 0.6):
            time.sleep(max(0.0, t0 + share * wall_s - time.monotonic()))
            name = rng.choice(LAYERS)
            pid = _agents(run_dir)[name]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(name)
            _wait(lambda n=name, p=pid: _agents(run_dir)[n]["pid"] != p, 30, f"restart of {name}")
        return killed

    return disturb


def _hang(wall_s: float, rng: random.Random):
    def disturb(run_dir: Path, t0: float) -> list[str]:
        time.sleep(max(0.0, t0 + 0.4 * wall_s - time.monotonic()))
        name = rng.choice(LAYERS)
        os.kill(_agents(run_dir)[name]["pid"], signal.SIGSTOP)
        return [name]

    return disturb


def measure(repeats: int, steps: int, every: int, seed: int) -> list[dict]:
    rows = []
    rng = random.Random(seed)
    for i in range(repeats):
        sets = [f"run.steps={steps}", f"run.checkpoint_every={every}", f"run.seed={i}"]
        with tempfile.TemporaryDirectory(prefix="sg-faults-") as tmp:
            log(f"repeat {i + 1}/{repeats}: clean")
            clean = _one(sets, Path(tmp) / "clean", None)
            wall = clean["wall_s"]
            log(f"repeat {i + 1}/{repeats}: two kills")
            kills = _one(sets, Path(tmp) / "kills", _kills(wall, rng))
            log(f"repeat {i + 1}/{repeats}: hang")
            hang = _one([*sets, f"run.hang_timeout_s={HANG_TIMEOUT_S}"], Path(tmp) / "hang", _hang(wall, rng))
        rows.append({"seed": i, "clean": _brief(clean), "kills": _brief(kills), "hang": _brief(hang)})
    return rows


def _brief(summary: dict) -> dict:
    return {
        "test_accuracy": summary["metrics"].get("test_accuracy"),
        "steps": summary["steps"],
        "wall_s": round(summary["wall_s"], 2),
        "restarts": summary["restarts"],
        "disturbed": summary["disturbed"],
        "faults": summary["faults"],
    }


def summarise(rows: list[dict]) -> dict:
    gaps = {arm: [r[arm]["test_accuracy"] - r["clean"]["test_accuracy"] for r in rows] for arm in ("kills", "hang")}
    rejoin = [f["rejoined_after_s"] for r in rows for arm in ("kills", "hang") for f in r[arm]["faults"] if "rejoined_after_s" in f]
    detect = [f["silent_s"] - HANG_TIMEOUT_S for r in rows for f in r["hang"]["faults"]]
    return {
        "gap_kills": gaps["kills"],
        "gap_hang": gaps["hang"],
        "max_abs_gap": max(abs(g) for g in gaps["kills"] + gaps["hang"]),
        "rejoined_after_s": {"median": statistics.median(rejoin), "max": max(rejoin)} if rejoin else None,
        "detected_past_timeout_s": {"median": statistics.median(detect), "max": max(detect)} if detect else None,
        "budget_reached": all(r[arm]["steps"] == r["clean"]["steps"] for r in rows for arm in ("kills", "hang")),
        "restarts": {"kills": [r["kills"]["restarts"] for r in rows], "hang": [r["hang"]["restarts"] for r in rows]},
    }


def report_text(report: dict) -> str:
    rows = []
    for r in report["runs"]:
        for arm in ("clean", "kills", "hang"):
            b = r[arm]
            faults = "; ".join(f"{f['agent']} {f['cause']}" + (f", back in {f['rejoined_after_s']:.2f} s" if "rejoined_after_s" in f else "") for f in b["faults"])
            rows.append([r["seed"], arm, f"{b['test_accuracy']:.4f}", b["steps"], b["wall_s"], b["restarts"], faults or "-"])
    s = report["summary"]
    lines = [
        f"faults: examples/mnist_cdni.toml, {report['steps']} steps, checkpoint every {report['checkpoint_every']}",
        table(["seed", "run", "test acc", "steps", "wall s", "restarts", "faults"], rows, "rlrrrrl"),
        "",
        table(
            ["measure", "value", "target"],
            [
                ["accuracy gap, two kills (each seed)", ", ".join(f"{g:+.4f}" for g in s["gap_kills"]), "within 0.01"],
                ["accuracy gap, hang (each seed)", ", ".join(f"{g:+.4f}" for g in s["gap_hang"]), "within 0.01"],
                ["rejoined after (median / max s)", _pair(s["rejoined_after_s"]), "<= 3 s"],
                ["hang detected past the timeout (median / max s)", _pair(s["detected_past_timeout_s"]), "<= 2 s"],
                ["budget reached by every faulty run", s["budget_reached"], "yes"],
            ],
            "llr",
        ),
    ]
    return "\n".join(lines)


def _pair(d: dict | None) -> str:
    return "-" if d is None else f"{d['median']:.2f} / {d['max']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, help="seeds (default 3, quick 1)")
    parser.add_argument("--steps", type=int, help="training steps per run (default 2000, quick 600)")
    parser.add_argument("--seed", type=int, default=13, help="seed of the choice of agents to disturb")
    parser.add_argument("--quick", action="store_true", help="one short repeat: a smoke test")
    parser.add_argument("--json", action="store_true", help="the report as JSON on the last line")
    args = parser.parse_args()
    exit_on_sigterm()
    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.steps or (600 if args.quick else 2000)
    every = max(50, steps // 10)
    rows = measure(repeats, steps, every, args.seed)
    report = {**header(__file__, args.quick), "steps": steps, "checkpoint_every": every, "runs": rows, "summary": summarise(rows)}
    finish(report, report_text(report), args.json)


if __name__ == "__main__":
    main()

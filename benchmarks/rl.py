"""Reinforcement learning: env steps and wall time to a demo's threshold, processes against one.

For each demo and seed, in one invocation (docs/rl.md, docs/results.md "Reinforcement learning"):

- dni: the demo's topology (actor and critic torsos on DNI links into the heads) with plain
  SG models, which see the torsos' features only;
- cdni: the demo as it is: the SG models also see the rollout rows (RL's cDNI);
- locked: the same split with backprop across processes (`link_defaults.mode = backprop`);
- plain: the same algorithm and network in one process, a loop written the way CleanRL's
  ppo.py is (benchmarks/_rl_plain.py), with the same hyperparameters.

Every arm stops at the threshold (mean return of the last 100 episodes) or at the budget.
Wall time counts from the start of training (the agents' first reports; the plain loop's
clock starts once its env and network are built), so start-up is reported apart.  The
processes check the threshold once per rollout, the plain loop at every env step: a bias
of up to one rollout (512 env steps on CartPole) against the processes.

    .venv/bin/python benchmarks/rl.py                         # CartPole, 2 seeds, 4 arms (~40 min)
    .venv/bin/python benchmarks/rl.py --demos lunarlander --seeds 1 --arms dni plain
    .venv/bin/python benchmarks/rl.py --quick --json          # smoke: tiny budgets, no threshold
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Child, exit_on_sigterm, finish, header, log, synthgrad_run, table  # noqa: E402

# Each demo: its topology, threshold, budget, and the plain loop's settings (the same).
DEMOS = {
    "cartpole": {
        "topology": REPO / "examples" / "cartpole_ppo.toml",
        "env_id": "CartPole-v1",
        "threshold": 475.0,
        "budget": 500_000,
        "plain": {},  # _rl_plain's defaults are CleanRL's classic-control ones, as the topology's
    },
    "lunarlander": {
        "topology": REPO / "examples" / "lunarlander_ppo.toml",
        "env_id": "LunarLander-v3",
        "threshold": 200.0,
        "budget": 2_000_000,
        "plain": {"num_envs": 16, "num_steps": 1024, "num_minibatches": 256, "update_epochs": 4, "gamma": 0.999,
                  "gae_lambda": 0.98, "learning_rate": 3e-4, "anneal_lr": False, "clip_vloss": False},
    },
}
ARMS = ("dni", "cdni", "locked", "plain")
SETS = {"dni": ["link_defaults.sg.context=false"], "cdni": ["link_defaults.sg.context=true"], "locked": ["link_defaults.mode=backprop"]}
QUICK_BUDGET = 2048


def _curve(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    t0 = min(r["t"] for r in rows)
    return [
        {"global_step": r["steps"], "wall_s": r["t"] - t0, "episodic_return": r.get("charts/episodic_return_mean")}
        for r in rows
        if r.get("agent") == "env" and "global_step" in r and "eval" not in r
    ]


def process_arm(demo: dict, arm: str, seed: int, budget: int, threshold: float | None, runs_dir: Path) -> dict:
    sets = [f"run.steps={budget}", f"run.seed={seed}", f"agents.env.stop_return={threshold or 0.0}", *SETS[arm]]
    started = time.monotonic()
    summary = synthgrad_run(demo["topology"], sets, runs_dir, timeout_s=3600)
    command_s = time.monotonic() - started
    curve = _curve(Path(summary["run_dir"]))
    final = summary["evaluations"][-1]
    reached = threshold is not None and final["charts/episodic_return_mean"] >= threshold
    last = curve[-1] if curve else {"wall_s": 0.0}
    return {
        "global_step": final["global_step"],
        "wall_s": last["wall_s"],
        "command_s": command_s,
        "sps": final["charts/SPS"],
        "final_mean_return": final["charts/episodic_return_mean"],
        "steps_to_threshold": final["global_step"] if reached else None,
        "wall_to_threshold": last["wall_s"] if reached else None,
        "curve": curve,
    }


def plain_arm(demo: dict, seed: int, budget: int, threshold: float | None) -> dict:
    # A child process: one torch thread and nothing of this process's state.
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import _rl_plain as p; "
        f"r = p.train_ppo({demo['env_id']!r}, seed={seed}, total_timesteps={budget}, threshold={threshold!r}, **{demo['plain']!r}); "
        "print(json.dumps(r))"
    )
    started = time.monotonic()
    with Child([sys.executable, "-c", code]) as child:
        child.wait(3600)
        result = child.last_json()
    for point in result["curve"]:  # NaN before the first episode ends: null in strict JSON
        if point["episodic_return"] != point["episodic_return"]:
            point["episodic_return"] = None
    result["command_s"] = time.monotonic() - started
    return result


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(mine, base: list[dict], key: str):
    """`mine` over the plain arm's median of `key`; None where either is missing."""
    theirs = _median([b[key] for b in base])
    return None if mine is None or not theirs else mine / theirs


def _fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def pictures(results: dict, folder: Path) -> list[str]:
    """One PNG per demo: the mean return of every arm and seed against env steps and wall time."""
    from matplotlib.figure import Figure

    written = []
    for demo, by_arm in results.items():
        fig = Figure(figsize=(12, 4.5))
        axes = fig.subplots(1, 2)
        for i, (arm, runs) in enumerate(by_arm.items()):
            for j, run in enumerate(runs):
                pts = [p for p in run["curve"] if p["episodic_return"] is not None and p["episodic_return"] == p["episodic_return"]]
                for ax, x in zip(axes, ("global_step", "wall_s"), strict=True):
                    ax.plot([p[x] for p in pts], [p["episodic_return"] for p in pts], color=f"C{i}", alpha=0.8, label=arm if j == 0 else None)
        threshold = DEMOS[demo]["threshold"]
        for ax, what in zip(axes, ("environment steps", "wall seconds from the start of training"), strict=True):
            ax.axhline(threshold, color="0.3", ls="--", lw=1)
            ax.set_xlabel(what)
            ax.set_ylabel("mean return of the last 100 episodes")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{demo}: decoupled agents against one process (benchmarks/rl.py)")
        path = folder / f"rl_{demo}.png"
        fig.savefig(path, dpi=90)
        written.append(str(path))
    return written


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demos", nargs="+", choices=sorted(DEMOS), default=["cartpole"])
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help=f"smoke: one seed, {QUICK_BUDGET} env steps, no threshold")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pictures", type=Path, help="write rl_DEMO.png learning curves into this folder")
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    report = header(__file__, args.quick)
    results: dict[str, dict[str, list[dict]]] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="synthgrad-rl-") as tmp:
        for name in args.demos:
            demo = DEMOS[name]
            budget = QUICK_BUDGET if args.quick else demo["budget"]
            threshold = None if args.quick else demo["threshold"]
            results[name] = {arm: [] for arm in args.arms}
            for seed in range(seeds):
                for arm in args.arms:  # arms alternate within a seed: drift hits them alike
                    log(f"{name} seed {seed}: {arm}")
                    if arm == "plain":
                        out = plain_arm(demo, seed, budget, threshold)
                    else:
                        out = process_arm(demo, arm, seed, budget, threshold, Path(tmp) / f"{name}-{arm}-{seed}")
                    results[name][arm].append(out)
            base = results[name].get("plain", [])
            for arm, runs in results[name].items():
                steps = _median([r["steps_to_threshold"] for r in runs])
                wall = _median([r["wall_to_threshold"] for r in runs])
                sps = _median([r["sps"] for r in runs])
                reached = sum(r["steps_to_threshold"] is not None for r in runs)
                rows.append([
                    name, arm, f"{reached}/{len(runs)}", _fmt(steps), " / ".join(_fmt(r["steps_to_threshold"]) for r in runs),
                    _fmt(wall, ".1f"), _fmt(sps), _fmt(_ratio(steps, base, "steps_to_threshold"), ".2f"),
                    _fmt(_ratio(wall, base, "wall_to_threshold"), ".2f"), _fmt(_ratio(sps, base, "sps"), ".2f"), _fmt(_median([r["final_mean_return"] for r in runs]), ".1f"),
                ])
    report["results"] = results
    report["summary"] = {
        name: {arm: {"steps_to_threshold": _median([r["steps_to_threshold"] for r in runs]), "wall_to_threshold": _median([r["wall_to_threshold"] for r in runs]),
                     "sps": _median([r["sps"] for r in runs]), "reached": sum(r["steps_to_threshold"] is not None for r in runs), "runs": len(runs)}
               for arm, runs in by_arm.items()}
        for name, by_arm in results.items()
    }
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
        report["pictures"] = pictures(results, args.pictures)
    text = table(
        ["demo", "arm", "reached", "env steps (median)", "each seed", "wall s (median)", "SPS", "steps / plain", "wall / plain", "SPS / plain", "final mean return"],
        rows, "llrrrrrrrrr",
    )
    finish(report, text, args.json)


if __name__ == "__main__":
    main()

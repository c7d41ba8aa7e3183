"""The paper's recurrent results with our `rnn` agents, run as real `synthgrad run` processes.

    .venv/bin/python benchmarks/paper_rnn.py --json                # full (about 25 min on 2 cores)
    .venv/bin/python benchmarks/paper_rnn.py --quick --json        # smoke: tiny budgets, < 90 s
    .venv/bin/python benchmarks/paper_rnn.py --sections copy,lm --out runs/paper_rnn

Sections (each prints a table with the paper's figure beside ours and writes a PNG to --out):

  copy          Copy at T in {2, 3, 5}: the longest length N solved by the curriculum (0.15 bits
                per sequence) within the same number of updates (windows), for truncated BPTT,
                DNI and DNI + Aux (examples/copy_bptt.toml / copy_dni.toml with --set).
  repeat_copy   Repeat Copy at T = 3, same arms: the longest output length N * R solved.
  lm            Shakespeare characters (examples/shakespeare_dni.toml): bits per character on
                the validation plays for BPTT at T = 5 and T = 20 and DNI + Aux at T = 5 after
                the same number of updates; and the characters read and the training time each
                arm needs to reach a common BPC (the worst arm's best BPC).
  two_timescale the two-timescale system: benchmarks/_timescale.py's run_section and table.

The budgets are a small fraction of the paper's (which trained for days on GPUs): compare the
orderings, not the figures. One seed per arm. A section's runs go `--jobs` at a time (default 2, the
machine's cores), so LM training times are each run's own median rate on a shared machine:
compare them as ratios. Progress goes to stderr, the
tables to stdout, and with --json the whole report as one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (
    REPO,
    exit_on_sigterm,
    finish,
    header,
    log,
    machine,
    synthgrad_run,
    table,
)

EXAMPLES = REPO / "examples"
SECTIONS = ("copy", "repeat_copy", "lm", "two_timescale")
ARMS = {  # name: (example, overrides on agents.lstm)
    "bptt": ("copy_bptt.toml", []),
    "dni": ("copy_dni.toml", []),
    "dni_aux": ("copy_dni.toml", ["agents.lstm.aux=true"]),
}
LABELS = {"bptt": "BPTT", "dni": "DNI", "dni_aux": "DNI + Aux"}
# The paper's longest solved lengths (Copy: approximate table; Repeat Copy T = 3: stated).
PAPER_COPY = {2: (7, 16, 15), 3: (8, 14, 17), 4: (10, 18, 19), 5: (8, 18, 19)}
PAPER_REPEAT = {3: (5, 33, 59)}
LM_ARMS = {  # name: (T, overrides)
    "bptt_T5": (5, ["agents.lstm.sg=false"]),
    "bptt_T20": (20, ["agents.lstm.sg=false"]),
    "dni_aux_T5": (5, []),
}
LM_PAPER = {"bptt_T5": "-", "bptt_T20": "~1.35 (PTB)", "dni_aux_T5": "~1.35 (PTB): 58% of the data, 1/2 the time"}
BATCH = 64  # the examples' run.batch_size
# Budgets: (full, quick). Copy: the same 12,000 time steps per row at every T, so updates
# (windows) = 12000 / T, equal across arms at each T. LM: equal updates across arms (T = 20
# reads four times the characters), as the paper compares them. Full: about 12 min on a quiet
# 2-core machine (measured here under other people's load: see the report's wall times).
COPY_STEPS = 12000
BUDGETS = {
    "copy": {"updates": ({T: COPY_STEPS // T for T in (2, 3, 5)}, {3: 60})},
    "repeat_copy": {"updates": ({3: 3000}, {3: 60})},
    "lm": {"updates": (1500, 40), "evals": (6, 2), "eval_steps": (500, 100)},
}


# ----------------------------------------------------------------------------- running


def run_example(example: str, sets: list[str], runs_dir: Path, timeout_s: float) -> dict:
    """One `synthgrad run` (two processes: source and rnn); its summary and the lstm's rows."""
    summary = synthgrad_run(EXAMPLES / example, sets, runs_dir, timeout_s)
    rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"summary": summary, "rows": [r for r in rows if r.get("agent") == "lstm"]}


def copy_arm(task: str, arm: str, T: int, updates: int, runs_dir: Path) -> dict:
    """One curriculum run; the longest length solved and its curve over updates."""
    example, extra = ARMS[arm]
    sets = [f"run.steps={updates}", f"run.eval_every={updates}", f"run.name={task}-{arm}-T{T}",
            f"agents.clock.task={task}", f"agents.clock.window={T}", f"agents.lstm.task={task}", *extra]
    log(f"  {task} {arm} T={T}: {updates} updates")
    out = run_example(example, sets, runs_dir, timeout_s=max(600.0, updates * T * 0.1))
    progress = [r for r in out["rows"] if "train_solved" in r]
    curve = [(r["step"], r["train_solved"], r["train_level"]) for r in progress]
    fits = [r["train_sg_fit"] for r in progress if "train_sg_fit" in r]
    final = out["summary"]["metrics"]
    return {
        "task": task, "arm": arm, "T": T, "updates": updates,
        # A level solved stays solved: the largest reported value is the final one.
        "solved": max((c[1] for c in curve), default=0.0),
        "level": curve[-1][2] if curve else None,
        "test_bits_per_seq": final.get("test_loss"),
        "sg_fit": statistics.median(fits[len(fits) // 2:]) if fits else None,
        "wall_s": out["summary"]["wall_s"],
        "curve": curve,
    }


def run_copy(task: str, quick: bool, runs_dir: Path, jobs: int) -> dict:
    updates = BUDGETS[task]["updates"][quick]
    # Longest runs first, so that the two slots finish together.
    specs = sorted(((task, arm, T, n, runs_dir) for T, n in updates.items() for arm in ARMS), key=lambda s: -s[2] * s[3])
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda s: copy_arm(*s), specs))
    results.sort(key=lambda r: (r["T"], list(ARMS).index(r["arm"])))
    return {"updates": {str(T): n for T, n in updates.items()}, "T": list(updates), "runs": results}


def lm_arm(arm: str, updates: int, evals: int, eval_steps: int, runs_dir: Path) -> dict:
    T, extra = LM_ARMS[arm]
    every = max(1, updates // evals)
    sets = [f"run.steps={updates}", f"run.eval_every={every}", f"run.name=lm-{arm}",
            f"agents.text.window={T}", f"agents.text.eval_windows={max(1, eval_steps // T)}", *extra]
    log(f"  lm {arm}: {updates} updates of T={T}")
    out = run_example("shakespeare_dni.toml", sets, runs_dir, timeout_s=max(900.0, updates * T * 0.05))
    curve = [(r["step"], r["test_loss"]) for r in out["rows"] if "eval" in r and "test_loss" in r]
    rates = [r["steps_per_s"] for r in out["rows"] if r.get("steps_per_s") and "eval" not in r and r.get("step", 0) > 0]
    return {
        "arm": arm, "T": T, "updates": updates, "batch": BATCH,
        "bpc": curve[-1][1] if curve else None,
        "best_bpc": min((c[1] for c in curve), default=None),
        "train_updates_per_s": statistics.median(rates) if rates else None,
        "wall_s": out["summary"]["wall_s"],
        "curve": curve,
    }


def reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Updates at which the BPC curve first reaches `target` (linear between evaluations)."""
    prev = (0, float("inf"))
    for step, bpc in curve:
        if bpc <= target:
            if prev[1] == float("inf"):
                return float(step)
            return prev[0] + (step - prev[0]) * (prev[1] - target) / (prev[1] - bpc)
        prev = (step, bpc)
    return None


def run_lm(quick: bool, runs_dir: Path, jobs: int) -> dict:
    budget = BUDGETS["lm"]
    updates, evals, eval_steps = (budget[k][quick] for k in ("updates", "evals", "eval_steps"))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        # The longest run (T = 20) first, so that the other slot runs the two T = 5 arms.
        order = sorted(LM_ARMS, key=lambda a: -LM_ARMS[a][0])
        done = dict(zip(order, pool.map(lambda a: lm_arm(a, updates, evals, eval_steps, runs_dir), order), strict=True))
    arms = {arm: done[arm] for arm in LM_ARMS}
    common = max(a["best_bpc"] for a in arms.values() if a["best_bpc"] is not None)
    for a in arms.values():
        steps = reach(a["curve"], common)
        a["updates_to_common"] = steps
        # Characters read per row and update: T. Time: at the run's median training rate, so
        # evaluation passes (not the same number per arm) stay out of it.
        a["chars_to_common"] = steps * a["T"] * a["batch"] if steps is not None else None
        rate = a["train_updates_per_s"]
        a["train_s_to_common"] = steps / rate if steps is not None and rate else None
    return {"updates": updates, "evals": evals, "common_bpc": common, "arms": arms}


def run_timescale(quick: bool, runs_dir: Path) -> dict:
    import _timescale  # benchmarks/_timescale.py: its arms, measures and table

    return _timescale.run_section(quick, runs_dir)


# ----------------------------------------------------------------------------- reporting


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def copy_text(task: str, section: dict) -> str:
    paper = PAPER_COPY if task == "copy" else PAPER_REPEAT
    by = {(r["T"], r["arm"]): r for r in section["runs"]}
    rows = []
    for T in section["T"]:
        ours = [by[(T, arm)] for arm in ARMS]
        ref = paper.get(T, ("-", "-", "-"))
        rows.append([f"{T} ({section['updates'][str(T)]})", *(fmt(r["solved"], ".0f") for r in ours), *ref,
                     " / ".join(f"{fmt(r['level'], '.0f')}: {fmt(r['test_bits_per_seq'])}" for r in ours),
                     *(fmt(r["sg_fit"]) for r in ours[1:]), " / ".join(fmt(r["wall_s"], ".0f") for r in ours)])
    what = "N" if task == "copy" else "N * R"
    head = ["T (updates)", "BPTT", "DNI", "DNI+Aux", "paper BPTT", "paper DNI", "paper DNI+Aux",
            "level: test bits/seq (B / D / A)", "SG fit DNI", "SG fit Aux", "wall s (B / D / A)"]
    return (f"## {'Copy' if task == 'copy' else 'Repeat Copy'}: longest {what} solved at equal updates "
            f"(batch 64, LSTM 256)\n\n" + table(head, rows)
            + "\n\nlevel: the level (N, or N * R) being trained at the end, and the held-out bits per "
            "sequence error there (lower is better; tells arms apart that solved the same length). "
            "SG fit: the SG's regression loss over its target's energy (1.0 explains nothing).")


def lm_text(section: dict) -> str:
    rows = []
    for name, a in section["arms"].items():
        rows.append([name, a["T"], fmt(a["bpc"], ".3f"), fmt(a["best_bpc"], ".3f"), fmt(a["updates_to_common"], ".0f"),
                     fmt(a["chars_to_common"] and a["chars_to_common"] / 1e6, ".2f"), fmt(a["train_s_to_common"], ".0f"),
                     fmt(a["wall_s"], ".0f"), LM_PAPER[name]])
    head = ["arm", "T", "BPC final", "BPC best", "updates to common", "M chars to common", "train s to common", "wall s", "paper"]
    return (f"## Shakespeare characters: BPC after {section['updates']} updates (batch 64, LSTM 256); "
            f"common BPC {section['common_bpc']:.3f}\n\n" + table(head, rows))


def timescale_text(section: dict) -> str:
    import _timescale

    return "## Two-timescale system\n\n" + _timescale.text(section)


def plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task in ("copy", "repeat_copy"):
        section = report["sections"].get(task)
        if not section:
            continue
        fig, axes = plt.subplots(1, len(section["T"]), figsize=(4.5 * len(section["T"]), 3.5), squeeze=False)
        for ax, T in zip(axes[0], section["T"], strict=True):
            for r in (r for r in section["runs"] if r["T"] == T):
                ax.plot([c[0] for c in r["curve"]], [c[1] for c in r["curve"]], label=LABELS[r["arm"]])
            ax.set(title=f"{task} T={T}", xlabel="updates", ylabel="longest length solved")
            ax.legend()
        written.append(_save(fig, out / f"{task}.png"))
    lm = report["sections"].get("lm")
    if lm:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for name, a in lm["arms"].items():
            axes[0].plot([c[0] for c in a["curve"]], [c[1] for c in a["curve"]], marker="o", label=name)
            axes[1].plot([c[0] * a["T"] * a["batch"] / 1e6 for c in a["curve"]], [c[1] for c in a["curve"]], marker="o", label=name)
        for ax, x in zip(axes, ("updates", "M characters read"), strict=True):
            ax.axhline(lm["common_bpc"], color="grey", ls=":")
            ax.set(xlabel=x, ylabel="validation BPC")
            ax.legend()
        written.append(_save(fig, out / "lm.png"))
    ts = report["sections"].get("two_timescale")
    if ts and isinstance(ts.get("arms"), dict):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for name, a in ts["arms"].items():
            curve = [c for c in a.get("curve") or [] if None not in c[:3]]
            if curve:
                axes[0].plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=name)
                axes[1].plot([c[0] for c in curve], [c[2] for c in curve], marker="o", label=name)
        for ax, who in zip(axes, ("A", "B"), strict=True):
            ax.set(xlabel="steps", ylabel=f"{who} accuracy")
            ax.legend()
        written.append(_save(fig, out / "two_timescale.png"))
    return written


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets")
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "paper_rnn", help="where the PNGs go")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time within a section (quick: at least 3)")
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    # Quick runs are mostly start-up: run a section's arms side by side.
    jobs = max(args.jobs, 3) if args.quick else args.jobs
    report = {**header(__file__, args.quick), "machine": machine(), "budgets": BUDGETS, "sections": {}}
    texts = []
    with tempfile.TemporaryDirectory(prefix="paper_rnn_") as tmp:
        runs_dir = Path(tmp)
        for name in sections:
            log(f"section {name}")
            if name in ("copy", "repeat_copy"):
                report["sections"][name] = result = run_copy(name, args.quick, runs_dir, jobs)
                texts.append(copy_text(name, result))
            elif name == "lm":
                report["sections"][name] = result = run_lm(args.quick, runs_dir, jobs)
                texts.append(lm_text(result))
            else:
                report["sections"][name] = result = run_timescale(args.quick, runs_dir)
                texts.append(timescale_text(result))
    report["plots"] = plots(report, args.out)
    budget = ("Budgets (updates per run): " + "; ".join(f"{k} {v['updates'][args.quick]}" for k, v in BUDGETS.items())
              + ". One seed per arm. The paper trained far longer: compare orderings, not figures.")
    finish(report, "\n\n".join([budget, *texts, "plots: " + ", ".join(report["plots"])]), args.json)


if __name__ == "__main__":
    main()

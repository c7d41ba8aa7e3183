"""The paper's feed-forward results, reproduced with our agents as processes.

    .venv/bin/python benchmarks/paper_ff.py                       # every section, full budget
    .venv/bin/python benchmarks/paper_ff.py --sections fcn one_dni --json
    .venv/bin/python benchmarks/paper_ff.py --quick --json        # CI smoke: a few arms, 40 steps

Every arm is one `synthgrad run` of a topology from benchmarks/_ff_topologies.py (source,
dense or conv layer agents, classifier; one OS process each), evaluated on the full test set
along the way.  Sections:

  fcn      MNIST FCN of 3, 4, 5, 6 layers x {no gradient, backprop, DNI, cDNI}
  one_dni  a 6-layer FCN trained by backprop except one link: DNI there, or cut (no gradient)
  sparse   4-layer FCN, every layer updates after a forward only with probability p
  unlock   4-layer FCN, complete unlock (synthetic inputs and cDNI gradients)
  dni_long 4-layer FCN, plain DNI at twice the FCN budget (is it still learning?)
  cnn      the paper's small CNN on MNIST and Fashion-MNIST: backprop, DNI, cDNI
  time     wall seconds to 97% and 98% test accuracy (benchmarks/_ff_time.py)

The paper trained for 500k steps; a 2-core machine affords a few thousand, so the tables put
the paper's figures beside ours for their order and gaps, not their absolute values.  Plots of
test error against steps (one PNG per section) go to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
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
from _ff_topologies import LABELS, cnn, fcn

SECTIONS = ("fcn", "one_dni", "sparse", "unlock", "dni_long", "cnn", "time")
# The paper (Jaderberg et al. 2016, arXiv 1608.05343), test error % after 500k steps; (v) = stated in the prose, else approximate.
PAPER_FCN = {  # layers: (no gradient, backprop, DNI, cDNI)
    3: (9.3, 2.0, 1.9, 2.2),
    4: (12.6, 1.8, 2.2, 1.9),
    5: (16.2, 1.8, 3.4, 1.7),
    6: (21.4, 1.8, 4.3, 1.6),
}
PAPER_ONE_DNI = "one DNI 1.8 (after layer 1) rising to 3.4 (after layer 5); cut 2.9 rising to 23.7; backprop 1.6"
PAPER_SPARSE = "DNI still reaches 2% at p = 0.2; cDNI trains at p = 0.05, just slower"
PAPER_UNLOCK = "reaches 2%, only slightly slower than cDNI"
PAPER_CNN = "CIFAR-10 CNN: backprop 17.9, DNI 19.5, cDNI 19.0 (no MNIST CNN figure)"
FCN_METHODS = ("none", "backprop", "dni", "cdni")


class Budget:
    """Steps and evaluation cadence of each section (--quick: a smoke test of the code paths),
    and the time section's widths, arms and wait for a quiet machine."""

    def __init__(
        self,
        quick: bool,
        steps: int | None = None,
        widths: tuple[int, ...] = (256, 1024),
        time_arms: tuple[str, ...] = (),
        wait_quiet_s: float = 0.0,
    ) -> None:
        self.quick, self.widths, self.time_arms, self.wait_quiet_s = (
            quick,
            widths,
            time_arms,
            wait_quiet_s,
        )
        self.fcn = steps or (40 if quick else 2000)  # 2000 batches of 256 = 8.5 MNIST epochs
        self.cnn = 30 if quick else 600
        self.evals = 2 if quick else 8  # evaluations per arm, evenly spaced, the last at the end

    def every(self, steps: int) -> int:
        return max(steps // self.evals, 1)


def run_arm(name: str, topology: str, workdir: Path, timeout_s: float) -> dict:
    """One `synthgrad run`: final test error, the error curve, wall seconds and the run dir."""
    path = workdir / f"{name}.toml"
    path.write_text(topology)
    log(f"  {name} ...")
    t0 = time.perf_counter()
    summary = synthgrad_run(path, [], workdir / "runs", timeout_s)
    curve = [(e["train_steps"], 100 * (1 - e["test_accuracy"])) for e in summary["evaluations"]]
    log(f"  {name}: {curve[-1][1]:.2f}% error, {time.perf_counter() - t0:.0f} s")
    return {
        "error": curve[-1][1],
        "curve": curve,
        "wall_s": summary["wall_s"],
        "run_dir": summary["run_dir"],
    }


def timeout_for(steps: int) -> float:
    return 120 + 1.0 * steps


def fmt(err: float | None) -> str:
    return "-" if err is None else f"{err:.2f}"


# ----------------------------------------------------------------------------- sections


def section_fcn(budget: Budget, workdir: Path) -> dict:
    depths = (3,) if budget.quick else (3, 4, 5, 6)
    methods = ("cdni",) if budget.quick else FCN_METHODS
    steps, arms = budget.fcn, {}
    for layers in depths:
        for method in methods:
            name = f"fcn{layers}-{method}"
            topo = fcn(
                name, layers, [method] * (layers - 1), steps=steps, eval_every=budget.every(steps)
            )
            arms[name] = run_arm(name, topo, workdir, timeout_for(steps))
    rows = []
    for layers in depths:
        row = [f"FCN {layers}"]
        for i, method in enumerate(FCN_METHODS):
            arm = arms.get(f"fcn{layers}-{method}")
            row.append(f"{fmt(arm and arm['error'])} ({PAPER_FCN[layers][i]})")
        rows.append(row)
    text = table(["MNIST, test error % (paper)", *(LABELS[m] for m in FCN_METHODS)], rows)
    return {"steps": steps, "arms": arms, "table": text}


def section_one_dni(budget: Budget, workdir: Path, done: dict) -> dict:
    layers, steps = 6, budget.fcn
    positions = (1,) if budget.quick else (1, 2, 3, 4, 5)
    arms = {}
    base = done.get("fcn", {}).get("arms", {}).get("fcn6-backprop")
    if base is None and not budget.quick:
        topo = fcn(
            "fcn6-backprop", layers, ["backprop"] * 5, steps=steps, eval_every=budget.every(steps)
        )
        base = run_arm("fcn6-backprop", topo, workdir, timeout_for(steps))
    for k in positions:
        for method, tag in (("dni", "dni"), ("none", "cut"))[: 1 if budget.quick else 2]:
            links = ["backprop"] * (layers - 1)
            links[k - 1] = method
            name = f"fcn6-{tag}-after-l{k}"
            topo = fcn(name, layers, links, steps=steps, eval_every=budget.every(steps))
            arms[name] = run_arm(name, topo, workdir, timeout_for(steps))
    rows = [
        [
            f"after layer {k}",
            *(fmt(arms.get(f"fcn6-{tag}-after-l{k}", {}).get("error")) for tag in ("dni", "cut")),
        ]
        for k in positions
    ]
    text = table(["6-layer FCN, test error %", "one DNI", "cut (no gradient)"], rows)
    text += f"\n\nbackprop, no DNI: {fmt(base and base['error'])}.  Paper: {PAPER_ONE_DNI}."
    return {"steps": steps, "arms": arms, "backprop": base, "table": text}


def section_sparse(budget: Budget, workdir: Path, done: dict) -> dict:
    steps = budget.fcn
    probabilities = (0.5,) if budget.quick else (1.0, 0.5, 0.2, 0.05)
    methods = ("cdni",) if budget.quick else ("dni", "cdni")
    fcn_arms = done.get("fcn", {}).get("arms", {})
    arms = {}
    for method in methods:
        for p in probabilities:
            name = f"fcn4-{method}-p{p}"
            if (
                p == 1.0 and f"fcn4-{method}" in fcn_arms
            ):  # every layer updates every step: the fcn arm
                arms[name] = fcn_arms[f"fcn4-{method}"]
                continue
            topo = fcn(
                name, 4, [method] * 3, steps=steps, eval_every=budget.every(steps), p_update=p
            )
            arms[name] = run_arm(name, topo, workdir, timeout_for(steps))
    rows = [
        [f"p = {p}", *(fmt(arms[f"fcn4-{m}-p{p}"]["error"]) for m in methods)]
        for p in probabilities
    ]
    text = table(["4-layer FCN, test error %", *(LABELS[m] for m in methods)], rows)
    text += f"\n\nPaper: {PAPER_SPARSE}."
    return {"steps": steps, "arms": arms, "table": text}


def section_unlock(budget: Budget, workdir: Path, done: dict) -> dict:
    steps = budget.fcn
    topo = fcn("fcn4-unlocked", 4, ["unlocked"] * 3, steps=steps, eval_every=budget.every(steps))
    arms = {"fcn4-unlocked": run_arm("fcn4-unlocked", topo, workdir, timeout_for(steps))}
    for method in ("cdni", "backprop"):
        if f"fcn4-{method}" in done.get("fcn", {}).get("arms", {}):
            arms[f"fcn4-{method}"] = done["fcn"]["arms"][f"fcn4-{method}"]
    rows = [[LABELS[name.split("-")[1]], fmt(arm["error"])] for name, arm in arms.items()]
    text = table(["4-layer FCN", "test error %"], rows) + f"\n\nPaper: {PAPER_UNLOCK}."
    return {"steps": steps, "arms": arms, "table": text}


def section_dni_long(budget: Budget, workdir: Path, done: dict) -> dict:
    steps = 2 * budget.fcn
    topo = fcn("fcn4-dni-long", 4, ["dni"] * 3, steps=steps, eval_every=budget.every(steps))
    arms = {"fcn4-dni-long": run_arm("fcn4-dni-long", topo, workdir, timeout_for(steps))}
    if "fcn4-dni" in done.get("fcn", {}).get("arms", {}):
        arms["fcn4-dni"] = done["fcn"]["arms"]["fcn4-dni"]
    rows = [[f"{arm['curve'][-1][0]}", fmt(arm["error"])] for arm in arms.values()]
    text = (
        table(["4-layer FCN, plain DNI: steps", "test error %"], rows)
        + "\n\nPaper: 2.2 after 500k steps."
    )
    return {"steps": steps, "arms": arms, "table": text}


def section_cnn(budget: Budget, workdir: Path) -> dict:
    steps = budget.cnn
    datasets = ("fashion_mnist",) if budget.quick else ("mnist", "fashion_mnist")
    methods = ("cdni",) if budget.quick else ("backprop", "dni", "cdni")
    arms = {}
    for dataset in datasets:
        for method in methods:
            name = f"cnn-{dataset}-{method}"
            topo = cnn(name, method, dataset=dataset, steps=steps, eval_every=budget.every(steps))
            arms[name] = run_arm(name, topo, workdir, timeout_for(4 * steps))
    rows = [[d, *(fmt(arms[f"cnn-{d}-{m}"]["error"]) for m in methods)] for d in datasets]
    text = (
        table(["CNN, test error %", *(LABELS[m] for m in methods)], rows)
        + f"\n\nPaper: {PAPER_CNN}."
    )
    return {"steps": steps, "arms": arms, "table": text}


def section_time(budget: Budget, workdir: Path) -> dict:
    from _ff_time import time_to_accuracy  # torch is imported only when this section runs

    return time_to_accuracy(
        budget.quick, workdir, budget.widths, budget.wait_quiet_s, budget.time_arms
    )


# ----------------------------------------------------------------------------- plots


def plot(section: str, result: dict, out: Path) -> Path | None:
    """Test error against steps for every arm of a section: one PNG, one panel per group.

    The fcn section gets a panel per depth with one colour per method; other sections one
    panel with one line per arm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = {n: a for n, a in result.get("arms", {}).items() if a.get("curve")}
    if not arms:
        return None
    groups: dict[str, dict] = {}
    for name, arm in arms.items():
        key = name.split("-")[0] if section == "fcn" else section
        groups.setdefault(key, {})[name] = arm
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 2.5, 4.5), squeeze=False)
    for ax, (key, members) in zip(axes[0], groups.items(), strict=True):
        for name, arm in members.items():
            steps, errors = zip(*arm["curve"], strict=True)
            label = name.removeprefix(f"{key}-") if section == "fcn" else name
            ax.plot(steps, errors, marker=".", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("training steps (batches of 256)")
        ax.set_title(key if section == "fcn" else f"paper_ff: {section}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("test error % (log)")
    fig.tight_layout()
    path = out / f"paper_ff_{section}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replot(report_path: Path, out: Path) -> int:
    """Draw the PNGs again from a saved report (paper_ff.json) without running anything."""
    report = json.loads(report_path.read_text())
    for section, result in report["sections"].items():
        print(plot(section, result, out))
    return 0


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: few arms, tiny budgets")
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON on the last line"
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--steps", type=int, help="training steps of the FCN sections (default 2000)"
    )
    parser.add_argument(
        "--out", type=Path, help="PNG plots, JSON and run dirs (default runs/paper_ff[_quick])"
    )
    parser.add_argument(
        "--replot", type=Path, help="only redraw the plots of a saved paper_ff.json"
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[256, 1024],
        help="hidden widths of the time section",
    )
    parser.add_argument(
        "--time-arms",
        nargs="+",
        default=["cdni-proc", "dni-proc", "bp-proc", "bp-1p", "dni-1p", "cdni-1p"],
        help="which arms the time section runs",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each time arm, wait up to S seconds for other work to leave the cores",
    )
    args = parser.parse_args(argv)
    # A smoke run must never overwrite the figures of a full one.
    args.out = args.out or REPO / "runs" / ("paper_ff_quick" if args.quick else "paper_ff")
    if args.replot:
        return replot(args.replot, args.out)
    exit_on_sigterm()
    budget = Budget(
        args.quick, args.steps, tuple(args.widths), tuple(args.time_arms), args.wait_quiet
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {**header(__file__, args.quick), "machine": machine(), "sections": {}}
    done: dict[str, dict] = report["sections"]
    texts = []
    with tempfile.TemporaryDirectory(dir=args.out, prefix="work-") as tmp:
        workdir = Path(tmp) if args.quick else args.out
        for section in SECTIONS:
            if section not in args.sections:
                continue
            log(f"section {section}")
            t0 = time.perf_counter()
            if section in ("fcn", "cnn", "time"):
                result = globals()[f"section_{section}"](budget, workdir)
            else:
                result = globals()[f"section_{section}"](budget, workdir, done)
            result["section_wall_s"] = time.perf_counter() - t0
            png = plot(section, result, args.out)
            result["plot"] = str(png) if png else None
            done[section] = result
            texts.append(f"## {section} ({result.get('steps', '')} steps)\n\n{result['table']}")
            # Partial results survive a later section failing or being interrupted.
            (args.out / "paper_ff.json").write_text(json.dumps(report, indent=1, default=str))
    finish(report, "\n\n".join(texts), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

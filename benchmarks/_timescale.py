"""The two-timescale system (Jaderberg et al. 2016, arXiv 1608.05343), three arms as real `synthgrad run` processes.

    import _timescale; _timescale.run_section(quick=False, runs_dir=Path("runs/bench"))

benchmarks/paper_rnn.py calls `run_section` for its `two_timescale` section; running this file
prints the section alone (`--quick`, `--json`).  The topology is examples/two_timescale.toml:
A (`fast`, tick 4) counts odd digits and sends one message per digit to B (`slow`, tick 16,
one LSTM step per 4 digits), which counts 3s.  The arms differ only in the A -> B link
(`links.1.mode`), with the same seed, data and number of digits:

  dni     A updates every 4 digits with the synthetic gradient of B (MLP 256, scale 10)
  cdni    as dni, the SG model also reading the block's digit classes (sg.context = true)
  locked  `backprop`: A waits for B's true gradient, so it updates once per 16 digits
  none    no gradient from B reaches A

Per arm: the curve of (step, A's test accuracy, B's test accuracy) at every evaluation,
where step counts digits per row (the source's training steps); `a_final` / `b_final`, the
mean of the last three evaluations (one evaluation swings by a few points: a late dip or
spike alone must not define "final"); `a_steps_to_final`, the first evaluated step at which
A is within 1 point of its own final accuracy; `a_steps_to_locked_final`, the first at which
A is within 1 point of the locked arm's final accuracy (None if never); `wall_s` from START
to the last evaluation.  `a_steps_ratio_dni_locked` compares the first of those between dni
and locked, `a_locked_final_ratio_dni_locked` the second (the fairer reading when dni ends
lower than locked).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import REPO, finish, header, log, machine, synthgrad_run, table

TOPOLOGY = REPO / "examples" / "two_timescale.toml"
ARMS = {  # name: overrides of the A -> B link
    "dni": ["links.1.mode=dni"],
    "cdni": ["links.1.mode=dni", "links.1.sg.context=true"],
    "locked": ["links.1.mode=backprop"],
    "none": ["links.1.mode=none"],
}
A, B = "fast", "slow"
WITHIN = 0.01  # "reached its final accuracy": within 1 point of it
FINAL_OF = 3  # "final accuracy": the mean of the last this many evaluations
BUDGETS = {  # quick: a smoke test of every arm (under a minute); full: a few minutes per arm
    True: [
        "run.steps=160",
        "run.eval_every=80",
        "run.eval_batch_size=50",
        "agents.digits.eval_steps=16",
    ],
    False: ["run.steps=16000", "run.eval_every=800"],
}
PAPER = {
    "a_dni_steps_vs_locked": "under half (v)",
    "b_none": "cannot solve its task (v)",
    "b_dni": "solves its task, similar accuracy to locked (v)",
}


def run_arm(link: list[str], quick: bool, runs_dir: Path, timeout_s: float) -> dict:
    """One `synthgrad run` of the topology with these link overrides; its summary."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    sets = [*BUDGETS[quick], *link]
    return synthgrad_run(TOPOLOGY, sets, runs_dir, timeout_s)


def curve(summary: dict) -> list[list]:
    """[step, A accuracy, B accuracy] per evaluation, in step order."""
    points: dict[int, dict[str, float]] = {}
    for e in summary["evaluations"]:
        points.setdefault(int(e["train_steps"]), {})[e["agent"]] = e["test_accuracy"]
    return [[step, p.get(A), p.get(B)] for step, p in sorted(points.items())]


def steps_to(points: list[list], target: float | None) -> int | None:
    """The first evaluated step at which A is within `WITHIN` of `target`."""
    if target is None:
        return None
    return next((step for step, a, _ in points if a is not None and a >= target - WITHIN), None)


def final_accuracy(points: list[list], column: int) -> float | None:
    """The mean of the last `FINAL_OF` evaluations of one agent's accuracy."""
    values = [p[column] for p in points if p[column] is not None][-FINAL_OF:]
    return sum(values) / len(values) if values else None


def ratios(arms: dict[str, dict]) -> dict[str, float | None]:
    """dni over locked: steps to each arm's own final accuracy, and to locked's."""
    out = {}
    for key, field in (
        ("a_steps_ratio_dni_locked", "a_steps_to_final"),
        ("a_locked_final_ratio_dni_locked", "a_steps_to_locked_final"),
    ):
        dni, locked = arms["dni"][field], arms["locked"][field]
        out[key] = dni / locked if dni and locked else None
    return out


def run_section(quick: bool, runs_dir: Path) -> dict:
    """Run the arms one after another; the section's JSON-serialisable result."""
    arms: dict[str, dict] = {}
    for name, link in ARMS.items():
        log(f"  two_timescale: {name} ({' '.join(link)})")
        summary = run_arm(
            link, quick, Path(runs_dir) / f"two_timescale-{name}", 240 if quick else 1200
        )
        points = curve(summary)
        a_final, b_final = final_accuracy(points, 1), final_accuracy(points, 2)
        arms[name] = {
            "curve": points,
            "a_final": a_final,
            "b_final": b_final,
            "a_steps_to_final": steps_to(points, a_final),
            "wall_s": round(summary["wall_s"], 2),
            "run_dir": summary["run_dir"],
        }
    locked_final = arms["locked"]["a_final"]
    for arm in arms.values():
        arm["a_steps_to_locked_final"] = steps_to(arm["curve"], locked_final)
    return {
        "topology": str(TOPOLOGY.relative_to(REPO)),
        "budget": BUDGETS[quick],
        "arms": arms,
        **ratios(arms),
        "paper": PAPER,
    }


def text(section: dict) -> str:
    """The section as a markdown table."""
    rows = [
        [
            name,
            a["a_final"],
            a["a_steps_to_final"],
            a["a_steps_to_locked_final"],
            a["b_final"],
            a["wall_s"],
        ]
        for name, a in section["arms"].items()
    ]
    head = [
        "arm",
        "A final acc",
        "A steps to final",
        "A steps to locked's final",
        "B final acc",
        "wall s",
    ]

    def fmt(ratio: float | None) -> str:
        return "-" if ratio is None else f"{ratio:.2f}"

    return (
        table(head, [[c if not isinstance(c, float) else f"{c:.3f}" for c in row] for row in rows])
        + f"\n\nA steps to its final accuracy, dni / locked: {fmt(section['a_steps_ratio_dni_locked'])}; "
        + f"to locked's final accuracy: {fmt(section.get('a_locked_final_ratio_dni_locked'))} "
        + f"(paper: {PAPER['a_dni_steps_vs_locked']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: 160 steps per arm")
    parser.add_argument("--json", action="store_true", help="the report as JSON on the last line")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="where the runs go (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        section = run_section(args.quick, args.runs_dir or Path(tmp))
    report = {**header(__file__, args.quick), "machine": machine(), "section": section}
    finish(report, "## Two-timescale system\n\n" + text(section), args.json)


if __name__ == "__main__":
    sys.exit(main())

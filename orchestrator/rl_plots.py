"""The learning curve of a run with an env agent (docs/rl.md): return against env steps and
against wall time, as RL papers and CleanRL's dashboards draw it.

The env agent's reports carry `steps` (environment steps), `charts/episodic_return` (the mean
return of the episodes that ended since its last report) and `charts/episodic_return_mean`
(the mean of the latest `window` episodes).  Both are drawn: the first as points, the second
as the line a threshold such as CartPole's 475 is read against.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from .plots import RunData, _colour, _figure, _finish, _series

RECENT, MEAN = "charts/episodic_return", "charts/episodic_return_mean"
X_LABELS = {"step": "environment steps", "wall": "wall time since the first report (s)"}


def is_rl(run: RunData) -> bool:
    """Whether any agent of the run reported episodic returns (an env agent)."""
    return any(MEAN in row for rows in run.train.values() for row in rows)


def learning_curve_figure(run: RunData, threshold: float | None = None) -> Figure:
    """1x2: episodic return against environment steps and against wall time; a dashed line
    at `threshold` when given."""
    fig = _figure((12, 4.5))
    axes = fig.subplots(1, 2)
    envs = [name for name, rows in run.train.items() if any(MEAN in row for row in rows)]
    for ax, x in zip(axes, ("step", "wall"), strict=True):
        drawn = False
        for i, name in enumerate(envs):
            rows = run.train[name]
            suffix = f" ({name})" if len(envs) > 1 else ""
            xs, ys = _series(rows, x, RECENT)
            if xs:
                ax.plot(
                    xs,
                    ys,
                    ".",
                    color=_colour(i),
                    alpha=0.35,
                    ms=3,
                    label=f"episodes since the last report{suffix}",
                )
            xs, ys = _series(rows, x, MEAN)
            if xs:
                ax.plot(
                    xs, ys, color=_colour(i), lw=2, label=f"mean of the latest episodes{suffix}"
                )
                drawn = True
        if threshold is not None and drawn:
            ax.axhline(threshold, color="0.3", ls="--", lw=1, label=f"threshold {threshold:g}")
        _finish(ax, "episodic return", X_LABELS[x], "return", drawn, f"no {MEAN} recorded")
    fig.suptitle(f"{run.label} ({run.mode}): learning curve")
    return fig

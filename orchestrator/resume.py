"""`synthgrad run --resume RUN_DIR`: continue a stopped, killed or crashed run.

The run directory holds what the run was (`topology.toml`, and in `config.json` the
`--set` overrides it ran with) and its checkpoint sets (orchestrator/checkpoints.py).
Resuming plans the same topology with the same overrides, picks the newest complete set
whose files verify (a corrupt newest set falls back to the one before), and starts every
agent from it in the same run directory: metrics.jsonl goes on, summary.json is rewritten.

Only overrides that cannot change what the checkpoints mean are allowed (`SAFE`): a larger
step budget, the evaluation interval, timers, the restart policy, checkpointing and what is
recorded (trace, TensorBoard).  Any other key exits 2 naming it, before any process starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoints import Checkpoints
from .config import ConfigError, Topology, load_topology

SAFE = frozenset({
    "run.steps", "run.epochs", "run.eval_every", "run.metrics_every_s", "run.register_timeout_s",
    "run.heartbeat_s", "run.hang_timeout_s", "run.max_restarts", "run.restart_backoff_s",
    "run.checkpoint_every", "run.checkpoint_every_s", "run.checkpoint_keep",
    "run.trace", "run.tensorboard",  # what is recorded, not what is learnt
})


def _key(assignment: str) -> str:
    return assignment.partition("=")[0].strip()


def prepare_resume(run_dir: Path, overrides: list[str]) -> tuple[Topology, dict, list[str]]:
    """The topology to resume, the checkpoint manifest to start from, and every override.

    Raises:
        ConfigError: not a run directory, an override that is not safe on resume, a budget
            the checkpoint has already passed, or no complete checkpoint that verifies.
    """
    run_dir = Path(run_dir).resolve()  # the agents get absolute checkpoint paths
    try:
        config = json.loads((run_dir / "config.json").read_text())
        name, order, source = config["run"]["name"], list(config["order"]), str(config["source"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError("--resume", f"{run_dir} is not a run directory (no readable config.json with run.name, order and source)") from None
    for assignment in overrides:
        if _key(assignment) not in SAFE:
            raise ConfigError(
                _key(assignment), f"cannot change on --resume (the checkpoints were made under it); safe keys: {sorted(SAFE)}"
            )
    given = {_key(a) for a in overrides}
    kept = [a for a in config.get("overrides", []) if _key(a) not in given]
    if {"run.steps", "run.epochs"} & given:  # the new budget replaces the old, whichever was used
        kept = [a for a in kept if _key(a) not in ("run.steps", "run.epochs")]
        if "run.steps" in given:
            kept.append("run.epochs=null")
        else:
            kept.append("run.steps=null")
    every = [*kept, *overrides, f"run.name={json.dumps(name)}"]
    topology = load_topology(run_dir / "topology.toml", every)
    manifest = Checkpoints(run_dir / "checkpoints", order, source, topology.run).latest()
    if manifest is None:
        raise ConfigError("--resume", f"{run_dir} has no complete checkpoint to resume from (checkpoints/*/manifest.json)")
    done = manifest["agents"][source].get("steps", 0)
    if topology.run.steps is not None and topology.run.steps <= done:
        raise ConfigError("run.steps", f"the newest checkpoint is at training step {done} of {topology.run.steps}; give a larger budget, e.g. --set run.steps={2 * done}")
    return topology, manifest, every

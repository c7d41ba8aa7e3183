"""Coordinated checkpoint sets: one consistent cut of a run, saved by every agent.

A round (docs/fault-tolerance.md, "Checkpoints"):

1. the orchestrator sends CHECKPOINT ``{id, dir}`` to the source, which saves its position
   at once and answers CHECKPOINT ``{id, step, file, sha256}``: `step` is the last step id
   it has sent;
2. every other agent gets CHECKPOINT ``{id, dir, step}`` and saves once its own clock (the
   newest step it has acted on) reaches that step, so each agent's state holds exactly the
   batches up to the source's cut, and answers the same way;
3. when every agent has answered, the manifest ``checkpoints/ID/manifest.json`` is written
   atomically with each file's SHA-256: a set is complete exactly when its manifest exists.
   The newest `run.checkpoint_keep` complete sets are kept; older ones are deleted.

A round that does not complete within `ROUND_TIMEOUT_S`, or during which an agent died, is
abandoned; its folder is removed once a later round completes or the run ends.  `latest()` is the newest complete set whose every file
still hashes to its manifest entry; a torn or corrupted set is logged and the previous used.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..agents.runtime.checkpoint import CheckpointError, file_sha256, write_atomic
from ..protocol.plan import RunSettings

ROUND_TIMEOUT_S = 30.0
MANIFEST = "manifest.json"

log = logging.getLogger("synthgrad.orchestrator")


@dataclass
class Round:
    """A checkpoint round in progress."""

    id: int
    folder: Path
    began: float
    step: int | None = None  # the source's cut, once it answered
    files: dict[str, dict] = field(default_factory=dict)


class Checkpoints:
    """The checkpoint sets of one run directory and the round in progress, if any.

    Args:
        root: the run's ``checkpoints`` folder.
        agents: every agent's name; `source` the source's.
        run: the run settings (`checkpoint_every`, `checkpoint_every_s`, `checkpoint_keep`).
    """

    def __init__(self, root: Path, agents: list[str], source: str, run: RunSettings) -> None:
        self.root = root
        self.agents = list(agents)
        self.source = source
        self.run = run
        self.current: Round | None = None
        self.completed: list[dict] = []  # manifests written in this run, oldest first
        existing = self._ids()
        self.next_id = (max(existing) + 1) if existing else 1
        self.last_step = -1  # the source's steps at the last round begun
        self.last_time = time.monotonic()

    @property
    def enabled(self) -> bool:
        return bool(self.run.checkpoint_every or self.run.checkpoint_every_s)

    def _ids(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())

    # ----------------------------------------------------------------- rounds
    def due(self, source_steps: int, now: float) -> bool:
        """Whether a round should begin (none in progress, and a step or time interval passed)."""
        if self.current is not None or not self.enabled:
            return False
        every, every_s = self.run.checkpoint_every, self.run.checkpoint_every_s
        if self.last_step < 0:
            self.last_step = source_steps  # the run's (or the resumed run's) start
        by_steps = every and source_steps - self.last_step >= every
        by_time = every_s and now - self.last_time >= every_s
        return bool(by_steps or by_time)

    def begin(self, source_steps: int, now: float) -> dict:
        """Start round `next_id`; the CHECKPOINT meta for the source."""
        ident = self.next_id
        self.next_id += 1
        folder = self.root / f"{ident:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        self.current = Round(ident, folder, now)
        self.last_step, self.last_time = source_steps, now
        return {"id": ident, "dir": str(folder)}

    def on_report(self, name: str, meta: dict) -> dict | None:
        """An agent's CHECKPOINT answer.  Returns the CHECKPOINT meta for every other agent
        when this is the source's answer (the cut), else None.  A stale answer is ignored."""
        current = self.current
        if current is None or meta["id"] != current.id:
            return None
        current.files[name] = {"file": Path(meta["file"]).name, "sha256": meta["sha256"], "step": meta["step"], "steps": meta.get("steps", 0)}
        if isinstance(meta.get("save_s"), (int, float)):
            current.files[name]["save_s"] = round(float(meta["save_s"]), 4)
        out = None
        if name == self.source and current.step is None:
            current.step = int(meta["step"])
            out = {"id": current.id, "dir": str(current.folder), "step": current.step}
        if len(current.files) == len(self.agents):
            self._complete(current)
        return out

    def _complete(self, current: Round) -> None:
        manifest = {"id": current.id, "step": current.step, "created": time.time(), "agents": current.files}
        write_atomic(current.folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        self.completed.append(manifest)
        self.current = None
        log.info("checkpoint %d complete at step %d (%d agents)", current.id, current.step, len(current.files))
        complete = [i for i in self._ids() if (self.root / f"{i:06d}" / MANIFEST).exists()]
        for old in complete[: -self.run.checkpoint_keep]:
            shutil.rmtree(self.root / f"{old:06d}", ignore_errors=True)
        self.remove_incomplete(before=current.id)

    def remove_incomplete(self, before: int | None = None) -> None:
        """Delete the folders of abandoned rounds (no manifest), those before round `before`
        or all when None (the run is over).  Not at the moment of abandoning: an agent may be
        writing into the folder then, and agents that reach an abandoned round's step still
        save into it (they are not told); their write fails harmlessly once it is gone."""
        for ident in self._ids():
            folder = self.root / f"{ident:06d}"
            if (before is None or ident < before) and not (folder / MANIFEST).exists():
                shutil.rmtree(folder, ignore_errors=True)

    def abandon(self, why: str) -> None:
        """Give up the round in progress (an agent died, or it took too long)."""
        if self.current is None:
            return
        log.warning("checkpoint %d abandoned: %s", self.current.id, why)
        self.current = None

    def expire(self, now: float) -> None:
        if self.current is not None and now - self.current.began > ROUND_TIMEOUT_S:
            missing = [n for n in self.agents if n not in self.current.files]
            self.abandon(f"no answer from {missing} within {ROUND_TIMEOUT_S:.0f} s")

    # ----------------------------------------------------------------- reading
    def _malformed(self, manifest) -> str | None:
        """What is wrong with a manifest's form (not its files), or None."""

        def count(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(manifest, dict) or not count(manifest.get("id")) or not count(manifest.get("step")):
            return "has no integer id and step"
        agents = manifest.get("agents")
        if not isinstance(agents, dict):
            return "has no agents"
        missing = [n for n in self.agents if n not in agents]
        if missing:
            return f"lacks {missing}"
        for name, entry in agents.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
                    and count(entry.get("step")) and count(entry.get("steps", 0))):
                return f"has a bad entry for {name!r}"
        return None

    def latest(self, only: str | None = None) -> dict | None:
        """The newest complete set whose files (or only agent `only`'s) verify, with each
        file's absolute path; None when there is none.  A corrupt set is logged and skipped."""
        for ident in reversed(self._ids()):
            folder = self.root / f"{ident:06d}"
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
            except FileNotFoundError:
                continue  # an incomplete round: no manifest
            except (OSError, ValueError) as err:
                log.warning("checkpoint %d is corrupt (its manifest: %s); using the one before it", ident, err)
                continue
            malformed = self._malformed(manifest)
            if malformed:
                log.warning("checkpoint %d is corrupt (its manifest %s); using the one before it", ident, malformed)
                continue
            problems = []
            for name, entry in manifest["agents"].items():
                entry["file"] = str(folder / entry["file"])
                if only is not None and name != only:
                    continue
                try:
                    if file_sha256(Path(entry["file"])) != entry["sha256"]:
                        problems.append(f"{entry['file']} does not match its SHA-256")
                except CheckpointError as err:
                    problems.append(str(err))
            if problems:
                log.warning("checkpoint %d is corrupt (%s); using the one before it", ident, "; ".join(problems))
                continue
            return manifest
        return None

"""Checkpoint files: written atomically, named by content hash, refused when torn.

An agent's checkpoint is one `torch.save` file of its core's `state_dict()` (module,
optimiser, SG and synthetic-input models, RNG states, step counters).  `save_atomic`
writes it to a temporary name in the same folder, fsyncs it, renames it into place and
fsyncs the folder (the POSIX recipe: after a crash the file is either the old one, absent,
or complete), and returns its SHA-256.  The orchestrator keeps that hash in the checkpoint
set's manifest (orchestrator/checkpoints.py); `load_verified` refuses a file whose bytes no
longer hash to it, so a torn or corrupted checkpoint is detected instead of half-loaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable, or not the bytes its manifest names."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_atomic(path: Path, state: dict, make_folder: bool = True) -> str:
    """Write `state` to `path` atomically (tmp, fsync, rename, fsync dir); its SHA-256 hex.

    Raises:
        OSError: the file cannot be written (no folder when `make_folder` is False, a full
            disk); the temporary file is removed and no file is left at `path`.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return sha256_of(data)


def write_atomic(path: Path, data: bytes) -> None:
    """`data` into `path` whole or not at all, durably: a temporary name in the same folder,
    fsync, rename, fsync of the folder (the POSIX recipe).

    Raises:
        OSError: as `open`; the temporary file is removed and `path` is left as it was.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def file_sha256(path: Path) -> str:
    """The SHA-256 hex of a file's bytes.  Raises `CheckpointError` when it cannot be read."""
    try:
        return sha256_of(Path(path).read_bytes())
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from err


def load_verified(path: Path, sha256: str) -> dict:
    """The state saved in `path`, after checking its bytes hash to `sha256`.

    Raises:
        CheckpointError: the file is missing or unreadable, or its hash differs (torn or
            corrupted); the message names the file and both hashes.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from err
    got = sha256_of(data)
    if got != sha256:
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 is {got[:12]}..., the manifest says {sha256[:12]}...")
    return torch.load(io.BytesIO(data), weights_only=True)


def rng_state(rng: random.Random | None = None) -> dict:
    """torch's global generator and, if given, an agent's own `random.Random`."""
    state = {"torch": torch.get_rng_state()}
    if rng is not None:
        state["python"] = rng.getstate()
    return state


def set_rng_state(state: dict, rng: random.Random | None = None) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if rng is not None and "python" in state:
        rng.setstate(state["python"])

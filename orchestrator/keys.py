"""CurveZMQ key pairs for tcp runs: `synthgrad keys generate`, and loading a run's keys.

One key pair per agent plus the orchestrator's (the layout is in protocol/curve.py), rather
than one client key shared by all agents, because a key is then an identity: the
orchestrator accepts a control message only when the connection's key is the key of the
agent the DEALER identity names, and an agent accepts a data message only when the
connection's key is the key of the agent its `src` names.  A leaked key then lets its holder
speak as one agent, not as every agent; one agent's key can be replaced without touching the
others; and each agent's data sockets admit only the agents linked to it.  The cost is that
generating needs the agent names (`--topology FILE` or names on the command line).

    synthgrad keys generate ~/.synthgrad/keys --topology examples/mnist_dni.toml
    synthgrad run examples/mnist_dni.toml --set run.transport=tcp --set run.keys=~/.synthgrad/keys

Existing keys are kept (so adding agents later is the same command) unless `--force` asks
for new ones: that is how keys are rotated (docs/security.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zmq.auth.certs import create_certificates

from ..protocol.curve import (
    AGENTS_DIR,
    ORCHESTRATOR,
    AllowList,
    KeyFileError,
    check_private,
    load_public,
    load_secret,
    public_file,
    secret_file,
)
from ..protocol.endpoints import check_interface
from ..protocol.sockets import CurveKeys

log = logging.getLogger("synthgrad.orchestrator")


@dataclass(frozen=True)
class RunKeys:
    """What a tcp run's orchestrator holds: its own key pair and every agent's public key."""

    path: Path  # the key directory; agents load their own secret from it
    server: CurveKeys  # the orchestrator's pair, for its ROUTER
    agents: dict[str, bytes]  # agent name -> Z85 public key

    def allow_list(self, logger: logging.Logger | None = None) -> AllowList:
        """The control ROUTER's allow-list: every agent of the run, nobody else."""
        return AllowList(self.agents, logger or log)

    def wire(self) -> dict[str, str]:
        """The public keys by agent, as WELCOME's `meta["keys"]` carries them."""
        return {name: key.decode() for name, key in self.agents.items()}


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    # create_certificates writes with the process umask; make the files private from birth.
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _private_dir(path: Path) -> None:
    """Make `path` mode 0700, or accept it if it exists and is private already.

    An existing directory that others may enter is refused rather than tightened: it may be
    a directory of other things (a home directory), whose mode is not ours to change."""
    if path.is_dir():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path}: key directory is accessible by group or others (mode {mode:04o}). Fix: chmod 700 {path}, or give a new directory")
        return
    path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _new_pair(folder: Path, name: str, force: bool) -> list[Path]:
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if secret.exists() and not force:
        return []
    with _private_umask():
        create_certificates(folder, name)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)  # a public key may be shown to anyone
    return [public, secret]


def generate(key_dir: str | os.PathLike, names: Iterable[str] = (), force: bool | Iterable[str] = False) -> list[Path]:
    """Write the orchestrator's key pair and one per agent in `names` into `key_dir`.

    Directories are made mode 0700, secret files 0600.  A pair that exists is kept, unless
    `force` is True (replace all) or names it (`"orchestrator"` for the orchestrator's).

    Returns:
        The files written (public and secret), in order.

    Raises:
        KeyFileError: `key_dir` (or its `agents/`) exists and group or others may enter it.
        OSError: the directory cannot be made or written.
    """
    root = Path(key_dir).expanduser()
    forced = force if isinstance(force, bool) else set(force)

    def forced_for(name: str) -> bool:
        return forced if isinstance(forced, bool) else name in forced

    _private_dir(root)
    written = _new_pair(root, ORCHESTRATOR, forced_for(ORCHESTRATOR))
    names = list(names)
    if names:
        _private_dir(root / AGENTS_DIR)
    for name in names:
        written += _new_pair(root / AGENTS_DIR, name, forced_for(name))
    return written


def load_run_keys(key_dir: str | os.PathLike, names: Iterable[str]) -> RunKeys:
    """The keys of a run of the agents `names`, every file checked.

    Each agent's secret file is checked too (`check_private`), although only the agent reads
    it, so that a key the agent would refuse stops the run before anything starts.

    Raises:
        KeyFileError: the directory or a file is missing, malformed or not private; the
            message names the file and the fix.
    """
    root = Path(key_dir).expanduser().resolve()  # agents get this path: make it absolute
    if not root.is_dir():
        raise KeyFileError(f"{root}: no such key directory; create it with `synthgrad keys generate {root} --topology FILE`")
    public, secret = load_secret(secret_file(root, None))
    if load_public(public_file(root, None)) != public:  # agents read the public file
        raise KeyFileError(f"{public_file(root, None)}: does not match {secret_file(root, None)}; regenerate with --force orchestrator")
    agents: dict[str, bytes] = {}
    for name in names:
        path = secret_file(root, name)
        if not path.exists():
            raise KeyFileError(
                f"{path}: no key for agent {name!r}; add it with `synthgrad keys generate {root} {name}` "
                "(existing keys are kept)"
            )
        check_private(path)
        agents[name] = load_public(public_file(root, name))
        if load_secret(path)[0] != agents[name]:
            raise KeyFileError(f"{public_file(root, name)}: does not match {path}; regenerate with --force {name}")
    return RunKeys(root, CurveKeys(public, secret), agents)


def fresh_run_keys(run_dir: Path, names: Iterable[str]) -> RunKeys:
    """New keys for one run in `run_dir/keys` (mode 0700), for a tcp run given no `run.keys`."""
    names = list(names)
    folder = run_dir / "keys"
    generate(folder, names)
    log.info("run.transport = 'tcp' with no run.keys: generated fresh CURVE keys for this run in %s", folder)
    return load_run_keys(folder, names)


def prepare_transport(run, names: Iterable[str]) -> RunKeys | None:
    """What a run needs checked before anything starts: its bind address and its keys.

    Returns the loaded keys for a tcp run with `run.keys`, else None (ipc, or fresh keys that
    the supervisor generates inside the run directory).

    Raises:
        KeyFileError: see `load_run_keys`.
        ValueError: `run.bind` is no address of this host.
    """
    if run.transport != "tcp":
        return None
    try:
        check_interface(run.bind)
    except ValueError as err:
        raise ValueError(f"run.bind: {err}") from None
    return None if run.keys is None else load_run_keys(run.keys, names)


# ------------------------------------------------------------------------- the CLI verb
EXAMPLES = """examples:
  synthgrad keys generate ~/.synthgrad/keys --topology examples/mnist_dni.toml
  synthgrad keys generate ~/.synthgrad/keys l4            # add one agent's key, keep the rest
  synthgrad keys generate ~/.synthgrad/keys --topology examples/mnist_dni.toml --force   # rotate all
  synthgrad run examples/mnist_dni.toml --set run.transport=tcp --set run.keys=~/.synthgrad/keys"""


def add_keys_parser(verbs: argparse._SubParsersAction) -> None:
    """`synthgrad keys generate DIR [NAME ...] [--topology FILE] [--force [NAME ...]] [--json]`."""
    keys = verbs.add_parser(
        "keys", help="CurveZMQ key pairs for tcp runs", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    gen = actions.add_parser(
        "generate",
        help="write the orchestrator's and each agent's key pair (dir 0700, secrets 0600)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("dir", type=Path, help="key directory (created if absent)")
    gen.add_argument("names", nargs="*", metavar="NAME", help="agent names to make keys for")
    gen.add_argument("--topology", type=Path, metavar="FILE", help="make keys for every agent of this topology file")
    gen.add_argument(
        "--force", nargs="*", metavar="NAME", default=None,
        help="replace existing keys: all of them, or only those named ('orchestrator' for its own)",
    )
    gen.add_argument("--json", action="store_true", help="machine-readable output")
    gen.set_defaults(func=cmd_keys_generate)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from .cli import EXIT_CONFIG, _print_json
    from .config import NAME_PATTERN, ConfigError, load_topology

    names = list(args.names)
    if args.topology is not None:
        try:
            names += [n for n in load_topology(args.topology).agents if n not in names]
        except ConfigError as err:
            print(f"synthgrad keys: {err}", file=sys.stderr)
            return EXIT_CONFIG
    bad = [n for n in names + list(args.force or ()) if not NAME_PATTERN.fullmatch(n)]
    if bad:
        print(f"synthgrad keys: {bad[0]!r} is not an agent name (letters, digits, '-', '_', '.')", file=sys.stderr)
        return EXIT_CONFIG
    force: bool | list[str] = False if args.force is None else (args.force or True)
    try:
        written = generate(args.dir, names, force)
    except KeyFileError as err:
        print(f"synthgrad keys: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as err:
        print(f"synthgrad keys: {args.dir}: {err.strerror or err}", file=sys.stderr)
        return EXIT_CONFIG
    root = Path(args.dir).expanduser()
    owners = [(ORCHESTRATOR, secret_file(root, None))] + [(n, secret_file(root, n)) for n in names]
    kept = [name for name, path in owners if path not in written]
    for path in written:
        print(f"wrote {path}")
    if kept:
        print(f"kept existing keys of {', '.join(kept)} (--force replaces them)")
    if args.json:
        _print_json({"dir": str(root), "written": [str(p) for p in written], "kept": kept})
    return 0

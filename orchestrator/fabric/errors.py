"""The fabric model's errors: each says what to fix, and each is a `ValueError`."""

from __future__ import annotations


class FabricError(ValueError):
    """A fabric description that cannot be modelled; `field` is the dotted path at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}" if field else message)


class UnknownName(ValueError):
    """An unknown preset, placement method, mode or schedule; the message lists the known ones."""

    def __init__(self, what: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.what, self.name, self.known = what, name, list(known)
        super().__init__(f"unknown {what} {name!r}; known: {', '.join(self.known)}")


class PlacementError(ValueError):
    """The agents cannot be placed on the fabric (SRAM or core count); the message says why."""

"""Errors of the public plug-in API that a kind raises or a user catches."""

from __future__ import annotations


class ParamError(ValueError):
    """A parameter a kind refuses; `param` names it, so planning reports ``agents.NAME.PARAM``.

    Raise it from a kind's ``__init__`` or ``build`` (any ``ValueError`` is reported, but
    only this one points the user at the key to fix).
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param

"""Validation of ``meta``: a small map of msgpack primitives, never objects."""

from .errors import ProtocolError
from .limits import Limits

# Scalars msgpack encodes natively.  Subclasses (bool of int, numpy.float64 of float, an
# IntEnum) are accepted on encode: msgpack writes them as their base type.
_SCALARS = (str, int, float, bytes, bool, type(None))
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1  # msgpack's uint64


def check_meta(meta: object, limits: Limits) -> None:
    """Raise ProtocolError unless ``meta`` is a str-keyed map of msgpack primitives.

    Primitives are nil, bool, int (int64 or uint64 range), float, str and bin, and arrays
    and str-keyed maps of them, nested at most ``limits.max_meta_depth`` deep (``meta``
    itself is depth 1) with at most ``limits.max_meta_items`` values in all.
    """
    if not isinstance(meta, dict):
        raise ProtocolError(f"meta must be a map, got {type(meta).__name__}")
    _check(meta, "meta", 1, [limits.max_meta_items], limits.max_meta_depth)


def _check(value: object, where: str, depth: int, budget: list, max_depth: int) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtocolError(f"meta holds more than the limit of values (at {where})")
    if isinstance(value, _SCALARS):
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise ProtocolError(f"{where}: int {value} does not fit msgpack's 64 bits")
        return
    if isinstance(value, dict):
        if depth > max_depth:
            raise ProtocolError(f"{where}: meta nests deeper than {max_depth}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(f"{where}: map key {key!r} is not a str")
            _check(item, f"{where}[{key!r}]", depth + 1, budget, max_depth)
        return
    if isinstance(value, (list, tuple)):
        if depth > max_depth:
            raise ProtocolError(f"{where}: meta nests deeper than {max_depth}")
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", depth + 1, budget, max_depth)
        return
    raise ProtocolError(
        f"{where}: {type(value).__name__} is not a msgpack primitive "
        "(allowed: None, bool, int, float, str, bytes, and lists/str-keyed dicts of them)"
    )

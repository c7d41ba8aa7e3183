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


def check_value(value: object, where: str, limits: Limits) -> None:
    """Raise ProtocolError unless ``value`` would be a valid value of ``meta``.

    The same rules as ``check_meta`` for one value that is not under ``meta``: the value of
    an unknown header key, or a descriptor element after the fourth (both of which a
    receiver ignores, but still bounds).  ``value`` itself is depth 1, as ``meta`` is.

    Args:
        where: how the error names the value, e.g. ``"header['future']"``.
    """
    _check(value, where, 1, [limits.max_meta_items], limits.max_meta_depth)


def unique_str_keys(pairs: list) -> dict:
    """msgpack ``object_pairs_hook``: the map of ``pairs``, refusing non-str and repeated keys.

    msgpack itself keeps the last of repeated keys silently, so two readers of one map could
    disagree on its contents; and a bin key would read as a str elsewhere.  Both are refused
    everywhere in the header map (meta and nested maps included).

    Raises:
        ProtocolError: a key is not a str, or a key appears twice in one map.
    """
    out = dict(pairs)
    for key in out:
        if type(key) is not str:
            raise ProtocolError(f"map key {key!r} is not a str")
    if len(out) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise ProtocolError(f"map key {key!r} appears twice in one map")
            seen.add(key)
    return out


def _check(value: object, where: str, depth: int, budget: list, max_depth: int) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtocolError(f"more than the limit of values (max_meta_items) at {where}")
    if isinstance(value, _SCALARS):
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise ProtocolError(f"{where}: int {value} does not fit msgpack's 64 bits")
        return
    if isinstance(value, dict):
        if depth > max_depth:
            raise ProtocolError(f"{where}: nests deeper than {max_depth} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(f"{where}: map key {key!r} is not a str")
            _check(item, f"{where}[{key!r}]", depth + 1, budget, max_depth)
        return
    if isinstance(value, (list, tuple)):
        if depth > max_depth:
            raise ProtocolError(f"{where}: nests deeper than {max_depth} levels")
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", depth + 1, budget, max_depth)
        return
    raise ProtocolError(
        f"{where}: {type(value).__name__} is not a msgpack primitive "
        "(allowed: None, bool, int, float, str, bytes, and lists/str-keyed dicts of them)"
    )

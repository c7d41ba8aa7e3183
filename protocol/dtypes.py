"""The allow-list of tensor dtypes and the conversion of user tensors to wire form.

On the wire a tensor is its raw bytes, C-contiguous and little-endian.  Only the dtypes
below may travel; the name is what the descriptor carries.  bfloat16 has no numpy builtin, so
it is ``ml_dtypes.bfloat16`` on both sides.
"""

import ml_dtypes
import numpy as np

from .errors import ProtocolError

#: Wire name -> little-endian numpy dtype.  The order is the order of docs/PROTOCOL.md.
WIRE_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

# dtype -> wire name.  numpy dtypes hash by value, so a native float32 finds "<f4" here on a
# little-endian host; a big-endian dtype does not, and takes the slow path that swaps bytes.
NAME_BY_DTYPE: dict[np.dtype, str] = {dt: name for name, dt in WIRE_DTYPES.items()}

ALLOWED = ", ".join(WIRE_DTYPES)


def wire_name(dtype: np.dtype) -> str | None:
    """The wire name of ``dtype`` if it may travel as is (allowed and little-endian), else None."""
    return NAME_BY_DTYPE.get(dtype)


def to_wire_array(obj: object, name: str) -> tuple[np.ndarray, str]:
    """Return ``obj`` as a C-contiguous little-endian array of an allowed dtype, and its name.

    Accepts numpy arrays, anything exposing the buffer protocol, and objects with
    ``__array__``.  Copies only when it must: non-contiguous or big-endian input.

    Raises:
        ProtocolError: the dtype is not on the allow-list or ``obj`` is not array-like.
    """
    arr = obj if type(obj) is np.ndarray else _as_array(obj, name)
    dname = NAME_BY_DTYPE.get(arr.dtype)
    if dname is None:
        dt = arr.dtype
        # Same kind of value in the other byte order?  Then swap rather than refuse.
        le = dt.newbyteorder("<") if dt.byteorder == ">" else None
        dname = NAME_BY_DTYPE.get(le)
        if dname is None:
            raise ProtocolError(
                f"tensor {name!r}: dtype {dt} may not travel on the wire; allowed: {ALLOWED}"
            )
        # astype/copy rather than np.ascontiguousarray, which turns 0-d arrays into 1-d.
        return arr.astype(le, order="C"), dname
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    return arr, dname


def _as_array(obj: object, name: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):  # a subclass (matrix, masked array): plain data only
        return np.asarray(obj)
    try:
        source = memoryview(obj)
    except TypeError:
        if not hasattr(obj, "__array__"):
            raise ProtocolError(
                f"tensor {name!r}: {type(obj).__name__} is neither a numpy array nor a buffer"
            ) from None
        source = obj  # e.g. a CPU torch tensor, converted without importing torch
    try:
        return np.asarray(source)
    except Exception as exc:  # a foreign buffer format or __array__ may raise anything
        raise ProtocolError(
            f"tensor {name!r}: cannot view {type(obj).__name__} as an array: {exc}"
        ) from exc

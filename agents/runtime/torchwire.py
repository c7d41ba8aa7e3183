"""Torch tensors to and from the protocol's numpy arrays, without copying.

The protocol layer is torch-free and speaks numpy; this is the one place that crosses over.
Arrays decoded from the wire are read-only views of the received buffers: torch wraps them
as they are (autograd never writes into an input), so the warning torch gives for
non-writable arrays is silenced once here.
"""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import torch

warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_BF16 = np.dtype(ml_dtypes.bfloat16)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a tensor's data (detached; bfloat16 as ml_dtypes.bfloat16)."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_BF16)
    return tensor.numpy()


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of `array` for the agent's float32 modules: it shares memory with a float32 or
    integer array; a float16, bfloat16 or float64 one (which the protocol allows a peer to
    send) is converted to float32, so that no module sees a dtype it was not built for."""
    if array.dtype == _BF16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).float()
    tensor = torch.from_numpy(array)
    return tensor.float() if tensor.is_floating_point() and tensor.dtype != torch.float32 else tensor

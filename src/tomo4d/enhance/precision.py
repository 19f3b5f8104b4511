"""Numeric precision of the InDI network: ``fp32`` (default), ``bf16`` or ``fp16``, applied with
``torch.autocast`` around the forward passes of training and inference.

* ``fp32``: no autocast (the reference numbers; bit-exact resume as before).
* ``bf16``: ``torch.autocast(dtype=torch.bfloat16)`` on the model's device (CPU or CUDA); weights,
  optimiser state and the loss stay float32.  On CPU it runs (the tests train and infer with it), and
  the output stays within :data:`BF16_TOLERANCE` of fp32 on a small model (tests/enhance/test_precision.py);
  whether it is faster depends on the CPU's bf16 support (benchmarks/RESULTS.md, issue 19).
* ``fp16``: CUDA only (``torch.autocast(dtype=torch.float16)``, with a gradient scaler in training whose
  state is checkpointed); refused on CPU with a message.

Nothing here changes torch's global state: autocast is a context entered and left around each call.
"""

from __future__ import annotations

from contextlib import nullcontext

from .._validate import show
from ..errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")
#: largest |bf16 - fp32| difference of a small model's enhanced output, in normalised [-1, 1] units,
#: that the tests accept (measured ~0.01-0.02 on the tiny preset; bf16 keeps 8 bits of mantissa)
BF16_TOLERANCE = 0.05


def check_precision(name: str, precision, device) -> str:
    """``precision`` checked against ``device`` (a ``torch.device``); returns it.

    Refuses names other than :data:`PRECISIONS` and ``fp16`` on a device that is not CUDA, naming
    ``name`` and the fix.
    """
    if precision not in PRECISIONS:
        raise InputError(f"{name}={show(precision)} is not a precision; use one of {', '.join(PRECISIONS)} "
                         "(fp32: the default; bf16: CPU or GPU; fp16: GPU only)")
    kind = getattr(device, "type", str(device))
    if precision == "fp16" and kind != "cuda":
        raise InputError(f"{name}='fp16' needs a CUDA GPU (the device is {kind}); use 'bf16' or 'fp32' on the CPU, "
                         "or --device cuda on a machine with a GPU")
    return precision


def autocast(precision: str, device):
    """The autocast context of ``precision`` on ``device`` (a no-op context for ``fp32``)."""
    if precision == "fp32":
        return nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=dtype)


def grad_scaler(precision: str, device):
    """A ``torch.amp.GradScaler`` for ``fp16`` on CUDA (None otherwise: bf16 and fp32 need no scaling)."""
    if precision != "fp16" or getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    return torch.amp.GradScaler("cuda")

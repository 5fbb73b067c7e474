"""Which attention backends work on this machine: the kernel backends as `diffattn.kernels.available_backends`
reports them (the same checks that pick a backend for each call), xformers by running it (importing is not enough),
and what each attention precision runs as here."""

from __future__ import annotations

import functools
import importlib.util

import torch

__all__ = ["backend_status", "precision_status", "xformers_works"]


@functools.cache
def xformers_works() -> str:
    """`"ok"` if xformers imports and computes attention correctly here, else why not.

    xformers wheels are built for one torch version, so importing is not enough: run a small attention.
    """
    if importlib.util.find_spec("xformers") is None:
        return "not installed"
    try:
        import xformers.ops as xops

        device = "cuda" if torch.cuda.is_available() else "cpu"
        q = torch.randn(1, 64, 2, 32, device=device, dtype=torch.float16 if device == "cuda" else torch.float32)
        out = xops.memory_efficient_attention(q, q, q)
        ref = torch.nn.functional.scaled_dot_product_attention(*(q.transpose(1, 2),) * 3).transpose(1, 2)
        if not torch.allclose(out.float(), ref.float(), atol=2e-2, rtol=2e-2):
            return "installed but gives wrong results"
        return "ok"
    except Exception as exc:  # any failure means "does not work here"
        return f"installed but unusable: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def backend_status() -> dict[str, str]:
    """Backend name -> `"ok"` or the reason it does not work here."""
    status: dict[str, str] = {}
    try:
        from diffattn.kernels import available_backends

        status.update({name: ("ok" if state is True else str(state)) for name, state in available_backends().items()})
    except ImportError as exc:
        status["kernels"] = f"unavailable: {exc}"
    status["xformers"] = xformers_works()
    return status


def precision_status() -> dict[str, str]:
    """Precision name -> how it runs on this machine's default device (the rule every attention call follows)."""
    from .precision import PRECISIONS, precision_support

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    status = {}
    for precision in PRECISIONS:
        runnable, note = precision_support(precision, device)
        status[precision] = note if note is not None else f"ok ({device.type})"
    return status

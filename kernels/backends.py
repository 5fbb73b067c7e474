"""Which backends can run here, decided once at import: the Triton modules load only if `triton` imports.

`TRITON_INTERPRET=1` must be set before this package is imported for the Triton kernels to run on a CPU
(Triton decides interpretation when a kernel is defined); tests set it in their conftest.
"""

from __future__ import annotations

import warnings

import torch

from diffattn.errors import BackendUnavailableError

__all__ = ["BACKENDS", "available_backends", "flex_reason", "triton_modules", "triton_reason", "unavailable", "warn_once"]

BACKENDS = ("reference", "flex", "triton")

try:
    from . import triton_attention as _triton_attention
    from . import triton_stats as _triton_stats

    _TRITON_IMPORT_ERROR: str | None = None
except Exception as exc:  # noqa: BLE001 - any import failure means "no triton backend", reported verbatim
    _triton_attention = _triton_stats = None
    _TRITON_IMPORT_ERROR = f"triton does not import ({type(exc).__name__}: {exc})"

try:
    from torch.nn.attention import flex_attention as _flex_module

    _FLEX_IMPORT_ERROR: str | None = None
except ImportError as exc:
    _flex_module = None
    _FLEX_IMPORT_ERROR = f"torch.nn.attention.flex_attention does not import ({exc}); needs torch >= 2.5"

_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Warn once per distinct message (fallbacks that would otherwise repeat every layer and step)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def triton_modules():
    """The Triton modules `(triton_attention, triton_stats)`; only call after `triton_reason(...)` is None."""
    return _triton_attention, _triton_stats


def triton_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on `device`, or None when they can."""
    if _TRITON_IMPORT_ERROR is not None:
        return _TRITON_IMPORT_ERROR
    if _triton_attention.INTERPRETED:
        return None if device.type == "cpu" else "the Triton kernels were built for the interpreter (TRITON_INTERPRET=1): CPU tensors only"
    if device.type != "cuda":
        return f"needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 before importing diffattn to run it on a CPU"
    return None


def flex_reason() -> str | None:
    return _FLEX_IMPORT_ERROR


def _here() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_backends() -> dict[str, bool | str]:
    """Backend name -> True when it runs on this machine's default device, else the reason it does not."""
    triton = triton_reason(_here())
    flex = flex_reason()
    return {"reference": True, "flex": flex or True, "triton": triton or True}


def unavailable(name: str, reason: str) -> BackendUnavailableError:
    """A `BackendUnavailableError` for `name` that also says what works here."""
    works = [n for n, ok in available_backends().items() if ok is True]
    return BackendUnavailableError(f"backend {name!r} cannot run this call: {reason}. Available here: {works}")

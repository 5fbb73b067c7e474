"""Which backend runs a call, decided in one place for attention, pooling, the Sparge planner and PSA's importance.

Every backend says why it cannot take a request, in two steps: `unavailable_on(device)` (it does not run on this
device at all: decided once at import for Triton and FlexAttention, `available_backends` reports it) and
`refuses(request)` (it runs here but not this call: a dtype, head_dim, block size or option it does not take).
`select` walks an operation's backends in priority order (triton, flex, reference): a named backend runs or is
refused with its reason; "auto" takes the first that accepts the call among those it may pick on the device (the
GPU backends only for CUDA tensors), and warns once when a backend that runs here declines a call.

`TRITON_INTERPRET=1` must be set before this package is imported for the Triton kernels to run on a CPU
(Triton decides interpretation when a kernel is defined); tests set it in their conftest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from diffattn.errors import BackendUnavailableError, DiffAttnError, PlanError
from diffattn.plan import BlockPlan

__all__ = ["BACKENDS", "Refusal", "Request", "available_backends", "select", "triton_modules", "triton_psa",
           "triton_quantize", "warn_once"]

try:
    from . import triton_attention as _triton_attention
    from . import triton_psa as _triton_psa
    from . import triton_quantize as _triton_quantize
    from . import triton_stats as _triton_stats

    _TRITON_IMPORT_ERROR: str | None = None
except Exception as exc:  # noqa: BLE001 - any import failure means "no triton backend", reported verbatim
    _triton_attention = _triton_psa = _triton_quantize = _triton_stats = None
    _TRITON_IMPORT_ERROR = f"triton does not import ({type(exc).__name__}: {exc})"

try:
    from torch.nn.attention import flex_attention as _flex_module

    _FLEX_IMPORT_ERROR: str | None = None
except ImportError as exc:
    _flex_module = None
    _FLEX_IMPORT_ERROR = f"torch.nn.attention.flex_attention does not import ({exc}); needs torch >= 2.5"

_WARNED: set[str] = set()
_HALF_DTYPES = (torch.float16, torch.bfloat16)


class Request(NamedTuple):
    """What an operation asks of a backend: enough to decide whether the backend can take the call."""

    op: str
    """"attention", "pooling", "sparge" or "psa"."""
    tensor: torch.Tensor
    """The call's q (attention, sparge, psa) or k (pooling): its device, dtype and head_dim."""
    plan: BlockPlan | None = None
    thresholds: bool = False
    """Whether an attention call sets pv_threshold or skip_threshold."""
    blocks: tuple[int, int] | None = None
    """(block_q, block_k) of a psa call."""
    precision: str = "bf16"
    """An attention call's `precision` (see `quant.py`)."""


class Refusal(NamedTuple):
    """Why a backend cannot take a request, and what a call that names the backend gets."""

    reason: str
    error: type[DiffAttnError] = BackendUnavailableError
    """Raised for a call that names the backend: PlanError when the plan is what the backend cannot take."""
    instead: str | None = None
    """A backend that runs the call in its place, with a warning, when the call names this one."""


@dataclass(frozen=True)
class Backend:
    """One backend: the operations it implements, where "auto" may pick it, and why it cannot take a request."""

    name: str
    ops: tuple[str, ...]
    auto_devices: tuple[str, ...] | None
    """Device types "auto" picks it for; None for every device."""
    unavailable_on: Callable[[torch.device], str | None]
    refuses: Callable[[Request], Refusal | None]
    """Asked only when the backend runs on the request's device."""


def warn_once(message: str) -> None:
    """Warn once per distinct message (fallbacks that would otherwise repeat every layer and step)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def triton_modules():
    """The Triton modules `(triton_attention, triton_stats)`; only call once `select` has picked "triton"."""
    return _triton_attention, _triton_stats


def triton_quantize():
    """The fused 8-bit quantisation module; only call once `select` has picked "triton" for an 8-bit call."""
    return _triton_quantize


def triton_psa():
    """The Triton PSA importance module; only call once `select` has picked "triton" for a "psa" request."""
    return _triton_psa


def _triton_unavailable_on(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on `device`, or None when they can."""
    if _TRITON_IMPORT_ERROR is not None:
        return _TRITON_IMPORT_ERROR
    if _triton_attention.INTERPRETED:
        return None if device.type == "cpu" else "the Triton kernels were built for the interpreter (TRITON_INTERPRET=1): CPU tensors only"
    if device.type != "cuda":
        return f"needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 before importing diffattn to run it on a CPU"
    return None


def _triton_refuses(request: Request) -> Refusal | None:
    """What the attention kernel does not take: dtype, head_dim, block sizes, a token mask too wide to pack (PSA's
    importance kernel: `_triton_psa_refuses`)."""
    if request.op == "psa":
        return _triton_psa_refuses(request)
    if request.op != "attention":
        return None
    ta, q, plan = _triton_attention, request.tensor, request.plan
    if q.dtype not in _HALF_DTYPES:
        return Refusal(f"dtype {q.dtype} (the Triton kernel takes float16 or bfloat16)")
    if q.shape[3] > ta.MAX_HEAD_DIM:
        return Refusal(f"head_dim {q.shape[3]} (the Triton kernel takes head_dim <= {ta.MAX_HEAD_DIM})")
    if plan.block_q not in ta.SUPPORTED_BLOCKS or plan.block_k not in ta.SUPPORTED_BLOCKS:
        return Refusal(f"plan blocks {plan.block_q}x{plan.block_k} (the Triton kernel takes block_q and block_k in "
                       f"{ta.SUPPORTED_BLOCKS}; build the plan with those block sizes)", PlanError)
    if plan.token_mask is not None and plan.token_mask.packed() is None:
        return Refusal("a token mask whose coordinates do not pack into 31 bits (see BoxMask.packed)")
    if request.precision == "int8-fp8" and q.device.type == "cuda" and torch.cuda.get_device_capability(q.device) < (8, 9):
        major, minor = torch.cuda.get_device_capability(q.device)
        return Refusal(f"precision 'int8-fp8' on compute capability {major}.{minor} (FP8 P.V needs 8.9+: Ada or "
                       "Hopper; precision 'int8' runs here)")
    return None


def _triton_psa_refuses(request: Request) -> Refusal | None:
    """What the PSA importance kernel does not take: dtype, head_dim, block sizes (those of the attention kernel)."""
    q, (block_q, block_k), ta = request.tensor, request.blocks, _triton_attention
    if q.dtype not in _HALF_DTYPES and not (q.dtype == torch.float32 and q.device.type == "cpu"):
        return Refusal(f"dtype {q.dtype} (the Triton PSA importance kernel takes float16 or bfloat16, and float32 "
                       "only under the interpreter, on CPU tensors)")
    if q.shape[3] > ta.MAX_HEAD_DIM:
        return Refusal(f"head_dim {q.shape[3]} (the Triton PSA importance kernel takes head_dim <= {ta.MAX_HEAD_DIM})")
    if block_q not in ta.SUPPORTED_BLOCKS or block_k not in ta.SUPPORTED_BLOCKS:
        return Refusal(f"blocks {block_q}x{block_k} (the Triton PSA importance kernel takes block_q and block_k in "
                       f"{ta.SUPPORTED_BLOCKS})", PlanError)
    return None


def _flex_refuses(request: Request) -> Refusal | None:
    """FlexAttention cannot express the thresholds nor 8 bits: the reference runs such calls when flex is named."""
    if request.thresholds:
        return Refusal("pv_threshold/skip_threshold (FlexAttention cannot express them)", instead="reference")
    if request.precision != "bf16":
        return Refusal(f"precision {request.precision!r} (FlexAttention computes in the inputs' dtype)",
                       instead="reference")
    return None


_REGISTRY = (
    Backend("triton", ("attention", "pooling", "sparge", "psa"), ("cuda",), _triton_unavailable_on, _triton_refuses),
    Backend("flex", ("attention",), ("cuda",), lambda device: _FLEX_IMPORT_ERROR, _flex_refuses),
    Backend("reference", ("attention", "pooling", "sparge", "psa"), None, lambda device: None, lambda request: None),
)
"""Every backend, in priority order."""

BACKENDS = tuple(backend.name for backend in _REGISTRY)


def _here() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_backends() -> dict[str, bool | str]:
    """Backend name -> True when it runs on this machine's default device, else the reason it does not."""
    return {backend.name: backend.unavailable_on(_here()) or True for backend in _REGISTRY}


def select(backend: str, request: Request) -> str:
    """The backend that runs `request`: `backend` when named (or the one it hands the call to), under "auto" the
    first in priority order that takes the call; raises `BackendUnavailableError` (or `PlanError`) with the named
    backend's reason."""
    offered = [candidate for candidate in _REGISTRY if request.op in candidate.ops]
    if backend != "auto" and backend not in [candidate.name for candidate in offered]:
        names = tuple(candidate.name for candidate in offered)
        raise BackendUnavailableError(f"unknown backend {backend!r} for {request.op}; choose 'auto' or one of {names}")
    device = request.tensor.device
    for candidate in offered:
        named = candidate.name == backend
        if not named and (backend != "auto" or device.type not in (candidate.auto_devices or (device.type,))):
            continue
        unavailable = candidate.unavailable_on(device)
        refusal = Refusal(unavailable) if unavailable is not None else candidate.refuses(request)
        if refusal is None:
            return candidate.name
        if named and refusal.instead is not None:
            warn_once(f"diffattn: backend {backend!r} cannot run {refusal.reason}; running {refusal.instead!r} instead")
            return select(refusal.instead, request)
        if named:
            works = [name for name, ok in available_backends().items() if ok is True]
            raise refusal.error(f"backend {backend!r} cannot run this call: {refusal.reason}. Available here: {works}")
        if unavailable is None and refusal.instead is None:
            warn_once(f"diffattn: the {candidate.name} backend is not used for {refusal.reason}; falling back to a "
                      "slower backend")
    raise BackendUnavailableError(f"no backend takes this {request.op} call")  # unreachable: reference takes all

"""PSA's block importance, the input of its pyramid plan: sampled attention summed per (query block, key block).

Definition (`block_importance_reference`): every `SAMPLE_STRIDE`-th token of the queries and of the keys is
sampled; each sampled query's softmax (logits `scale * q.k`) is over all sampled keys; the probabilities are
summed per (query block, key block) pair, so a query block's row sums to the number of its sampled queries.
float32 `[B, H, q_blocks, kv_blocks]`; the last blocks may be ragged and q_len may differ from kv_len.

The Triton backend (`triton_psa`, on CUDA) computes the same in one launch without materialising the logits; its
logits stay in float32 where the reference rounds half-precision logits to the input dtype before the softmax.
"""

from __future__ import annotations

import math

import torch

from diffattn.errors import ConfigError

from . import backends
from .checks import AttentionInputError, resolve_scale
from .sparge import check_query_keys

__all__ = ["SAMPLE_STRIDE", "block_importance", "block_importance_reference"]

SAMPLE_STRIDE = 4
"""Every 4th token is sampled (PSA samples a quarter of each block's queries and keys)."""
_CHUNK_ELEMENTS = 1 << 27  # sampled logits held at once (512 MB in float32)


def block_importance_reference(
    q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, scale: float
) -> torch.Tensor:
    """The definition in torch ops, a chunk of sampled queries at a time so memory stays bounded."""
    batch, heads, q_len, _ = q.shape
    kv_len = k.shape[2]
    q_samples, k_samples = q[:, :, ::SAMPLE_STRIDE], k[:, :, ::SAMPLE_STRIDE]
    q_block = torch.arange(0, q_len, SAMPLE_STRIDE, device=q.device) // block_q
    k_block = torch.arange(0, kv_len, SAMPLE_STRIDE, device=q.device) // block_k
    importance = torch.zeros(batch, heads, math.ceil(q_len / block_q), math.ceil(kv_len / block_k), device=q.device)
    rows = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * k_samples.shape[2]))
    for start in range(0, q_samples.shape[2], rows):
        stop = min(q_samples.shape[2], start + rows)
        probs = ((q_samples[:, :, start:stop] @ k_samples.transpose(-1, -2)).float() * scale).softmax(-1)
        per_block = torch.zeros(batch, heads, stop - start, importance.shape[-1], device=q.device)
        per_block.index_add_(-1, k_block, probs)
        importance.index_add_(2, q_block[start:stop], per_block)
    return importance


def block_importance(
    q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, scale: float | None = None, *, backend: str = "auto"
) -> torch.Tensor:
    """float32 `[B, H, q_blocks, kv_blocks]`: PSA's sampled attention of q `[B, H, Sq, D]` over k `[B, H, Skv, D]`
    summed per block pair (see the module docstring).

    Args:
        block_q, block_k (`int`): block sizes, multiples of `SAMPLE_STRIDE` (the Triton kernel takes 64 or 128).
        scale (`float`, *optional*): logit scale, default `1/sqrt(head_dim)`.
        backend (`str`): "auto" (Triton on CUDA when it takes the call, else the reference), "triton" or "reference".
    """
    check_query_keys(q, k)
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise AttentionInputError(f"q and k need at least one token; got {tuple(q.shape)} and {tuple(k.shape)}")
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or size <= 0 or size % SAMPLE_STRIDE:
            raise ConfigError(f"{name} must be a positive multiple of {SAMPLE_STRIDE} tokens; got {size!r}")
    scale = resolve_scale(scale, q.shape[3])
    if backends.select(backend, backends.Request("psa", q, blocks=(block_q, block_k))) == "triton":
        return backends.triton_psa().psa_importance_op(q, k, block_q, block_k, SAMPLE_STRIDE, scale)
    return block_importance_reference(q, k, block_q, block_k, scale)

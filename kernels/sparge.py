"""SpargeAttn stage 1: predict the (q-block, kv-block) pairs worth computing, on the device, without a host sync.

Per (batch, head), following SpargeAttn (thu-ml/SpargeAttn `spas_sage_attn/utils.py`, `get_block_map_meansim`):

1. K is smoothed (`k - mean over tokens`); per block, the mean token (`pool`) and the mean pairwise cosine of
   its tokens (`sim`) are computed for Q and the smoothed K (one Triton pass, or torch).
2. A block is self-similar when `sim > sim_threshold`. `S = pool_q . pool_k^T * scale`; columns of K blocks that
   are not self-similar become -inf; then a softmax per row.
3. Selection per row: TopCdf(tau = `cdf_threshold`), the highest blocks while their cumulative probability stays
   at most tau (SpargeAttn's count `searchsorted(cdf, tau, right=True)`, so tuned thresholds transfer), or top-k,
   a fraction `topk` of the kv blocks; at least 1 either way.
4. Forced keeps: every non-self-similar K column, every row whose Q block is not self-similar (dense row), and
   kv block 0 when `attention_sink`.

The plan has width `num_kv_blocks` and is written with sort/cumsum/scatter only (no `.item()`, no data-dependent
shapes), so a denoising loop never waits on the host.
"""

from __future__ import annotations

import torch

from diffattn.errors import ConfigError
from diffattn.plan import BlockPlan

from . import backends
from .checks import AttentionInputError, resolve_scale
from .reference import block_stats_reference

__all__ = ["DEFAULT_CDF_THRESHOLD", "DEFAULT_SIM_THRESHOLD", "sparge_plan"]

DEFAULT_CDF_THRESHOLD = 0.98
"""TopCdf tau used when neither `topk` nor `cdf_threshold` is given (`spas_sage2_attn_meansim_cuda` default)."""
DEFAULT_SIM_THRESHOLD = 0.6
"""Self-similarity threshold theta (`simthreshd1` default of the same API)."""


def check_query_keys(q: torch.Tensor, k: torch.Tensor) -> None:
    """q `[B, H, Sq, D]` and k `[B, H, Skv, D]`: matching batch, heads and head_dim, one floating dtype, one device."""
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
        raise AttentionInputError(f"q and k must be torch.Tensors; got {type(q).__name__} and {type(k).__name__}")
    if q.ndim != 4 or k.ndim != 4 or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise AttentionInputError(
            f"q and k must be [batch, heads, tokens, head_dim] with matching batch, heads and head_dim; "
            f"got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.device != k.device or not q.is_floating_point() or q.dtype != k.dtype:
        raise AttentionInputError(f"q and k must be floating tensors of one dtype on one device; got "
                                  f"{q.dtype}@{q.device} and {k.dtype}@{k.device}")


def _check_inputs(q: torch.Tensor, k: torch.Tensor, topk: float | None, cdf_threshold: float | None) -> None:
    check_query_keys(q, k)
    if topk is not None and cdf_threshold is not None:
        raise ConfigError("give either topk or cdf_threshold, not both")
    if topk is not None and not 0.0 < topk <= 1.0:
        raise ConfigError(f"topk is a fraction of kv blocks in (0, 1]; got {topk}")
    if cdf_threshold is not None and not 0.0 <= cdf_threshold <= 1.0:
        raise ConfigError(f"cdf_threshold is a probability mass in [0, 1]; got {cdf_threshold}")


def _select(probs: torch.Tensor, topk: float | None, cdf_threshold: float | None) -> torch.Tensor:
    """bool mask of the blocks each row selects by top-k fraction or TopCdf."""
    kv_blocks = probs.shape[-1]
    ordered, order = probs.sort(-1, descending=True)
    rank = torch.arange(kv_blocks, device=probs.device)
    if topk is not None:
        keep_sorted = (rank < _topk_count(topk, kv_blocks)).expand(ordered.shape)
    else:
        keep_sorted = (ordered.cumsum(-1) <= cdf_threshold) | (rank == 0)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _topk_count(topk: float, kv_blocks: int) -> int:
    return max(1, int(topk * kv_blocks))


def _theta(value: float | torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The self-similarity threshold as float32 `[heads]` on q's device (a fill, not a host-to-device copy)."""
    heads = q.shape[1]
    if isinstance(value, torch.Tensor):
        if value.numel() not in (1, heads):
            raise ConfigError(f"sim_threshold tensor must have 1 or heads={heads} elements; got {value.numel()}")
        return value.to(device=q.device, dtype=torch.float32).reshape(-1).expand(heads).contiguous()
    return torch.full((heads,), float(value), device=q.device)


def _reference_plan(q, k, block_q, block_k, topk, cdf_threshold, theta, attention_sink, scale) -> BlockPlan:
    """The definition, in plain torch ops: Gram-matrix statistics, softmax, sort-based selection."""
    pool_q, sim_q = block_stats_reference(q, None, block_q)
    pool_k, sim_k = block_stats_reference(k, k.mean(2, dtype=torch.float32), block_k)
    theta = theta.view(1, -1, 1)
    k_similar = sim_k > theta  # [B, H, KB]
    q_similar = sim_q > theta  # [B, H, QB]
    scores = (pool_q @ pool_k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~k_similar[:, :, None, :], float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    keep = _select(probs, topk, cdf_threshold)
    keep = keep | ~k_similar[:, :, None, :] | ~q_similar[..., None]
    if attention_sink:
        keep = keep | (torch.arange(keep.shape[-1], device=keep.device) == 0)
    return BlockPlan.sync_free(keep, block_q, block_k)


def _triton_plan(q, k, block_q, block_k, topk, cdf_threshold, theta, attention_sink, scale) -> BlockPlan:
    """Five launches: block statistics of q and of smoothed k, k's mean, the pooled scores, the row selection."""
    _, ts = backends.triton_modules()
    pool_q, sim_q = ts.block_stats_op(q, None, block_q)
    pool_k, sim_k = ts.block_stats_op(k, k.mean(2, dtype=torch.float32), block_k)
    scores = pool_q @ pool_k.transpose(-1, -2)
    kv_blocks = scores.shape[-1]
    count = _topk_count(topk, kv_blocks) if topk is not None else 0
    indices, counts = ts.sparge_select_op(scores, sim_q, sim_k, theta, scale, count, cdf_threshold or 0.0,
                                          attention_sink)
    return BlockPlan(indices, counts, block_q, block_k, kv_blocks, trusted=True)  # full width, row 0 always kept


def sparge_plan(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_q: int = 128,
    block_k: int = 128,
    topk: float | None = None,
    cdf_threshold: float | None = None,
    sim_threshold: float | torch.Tensor = DEFAULT_SIM_THRESHOLD,
    attention_sink: bool = True,
    scale: float | None = None,
    backend: str = "auto",
) -> BlockPlan:
    """SpargeAttn's block plan for q `[B, H, Sq, D]` against k `[B, H, Skv, D]` (see the module docstring).

    Args:
        block_q, block_k (`int`): plan block sizes (the Triton attention kernel takes 64 or 128).
        topk (`float`, *optional*): keep this fraction of kv blocks per row (at least one).
        cdf_threshold (`float`, *optional*): TopCdf tau; used (default `DEFAULT_CDF_THRESHOLD`) unless `topk` is given.
        sim_threshold (`float` or `torch.Tensor [heads]`): self-similarity theta; blocks with mean cosine <= theta
            are forced dense (Q rows) or always kept (K columns). -1 disables the check.
        attention_sink (`bool`): always keep kv block 0.
        scale (`float`, *optional*): logit scale of the pooled scores, default `1/sqrt(head_dim)`.
        backend (`str`): "auto" (Triton on CUDA), "triton" (statistics and row selection in Triton kernels; ties
            at the cut are all kept) or "reference" (torch ops, Gram matrices: the definition).

    Returns:
        A level-1 `BlockPlan` of width `num_kv_blocks` on q's device, batch and heads not broadcast.
    """
    _check_inputs(q, k, topk, cdf_threshold)
    if topk is None and cdf_threshold is None:
        cdf_threshold = DEFAULT_CDF_THRESHOLD
    use_triton = backends.select(backend, backends.Request("sparge", q)) == "triton"
    scale = resolve_scale(scale, q.shape[3])
    build = _triton_plan if use_triton else _reference_plan
    return build(q, k, block_q, block_k, topk, cdf_threshold, _theta(sim_threshold, q), attention_sink, scale)

"""diffattn.kernels: block-sparse attention (Triton, FlexAttention, PyTorch reference) and plan builders.

`block_sparse_attention` runs any `diffattn.plan.BlockPlan` (pooled levels, token masks, SpargeAttn P.V
skipping, LiteAttention marks, LSE); `sparge_plan` predicts a plan on the device; `pool_kv` builds PSA's
pooled K/V; `available_backends` says what runs here. See `api.py` for the exact semantics.
"""

if __name__ == "diffattn.kernels":
    from .api import (
        PooledKV,
        SparseAttentionOutput,
        available_backends,
        block_sparse_attention,
        pool_kv,
    )
    from .checks import AttentionInputError
    from .sparge import sparge_plan

    __all__ = [
        "AttentionInputError",
        "PooledKV",
        "SparseAttentionOutput",
        "available_backends",
        "block_sparse_attention",
        "pool_kv",
        "sparge_plan",
    ]
else:
    # This folder is installed as `diffattn.kernels`. With a source checkout's root on sys.path, transformers and
    # diffusers probing for Hugging Face's unrelated `kernels` package import it as top-level `kernels` (to read a
    # version it does not have, so they treat it as absent). Import nothing then: a second copy of the kernel modules
    # would register diffattn's torch custom ops a second time and break the first.
    __all__ = []

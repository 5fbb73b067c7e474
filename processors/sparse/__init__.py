"""Sparse attention methods for video diffusion transformers: one module per method plus the shared view.

- `common`: the sparse view of a call (token order, joint text handling, key padding), plan algebra, stats.
- `sparge`: SpargeAttn and its calibration; `radial`: Radial attention; `psa`: pyramid sparse attention;
  `lite`: LiteAttention; `pab`: Pyramid Attention Broadcast; `quantized`: 8-bit dense attention (or 8-bit plans of
  the others); `probe`: methods on raw q/k/v, outside a model.
"""

from .common import BlockSparseMethod, SparseLayout, attach_plan, joint_plan, sparse_attend
from .lite import LiteAttentionMethod
from .pab import PABMethod
from .probe import AttentionProbe
from .psa import PSAMethod
from .quantized import QuantizedMethod
from .radial import RadialMethod
from .sparge import SpargeCalibration, SpargeMethod

__all__ = [
    "BlockSparseMethod",
    "SparseLayout",
    "sparse_attend",
    "attach_plan",
    "joint_plan",
    "SpargeMethod",
    "SpargeCalibration",
    "RadialMethod",
    "PSAMethod",
    "LiteAttentionMethod",
    "PABMethod",
    "QuantizedMethod",
    "AttentionProbe",
]

"""Zero-shot video editing through attention: the controller and its parts (FateZero, RealCraft, FRESCO).

* `controller`: `AttentionController` (per-layer policies keyed by module name, modes) and the attention method
  `VideoEditingAttention` that runs it in diffattn's processor chain.
* `frames`: batch layout and K/V source policies (self, first, mid, last, all, relative offsets).
* `store`: the attention-probability store (RAM budget, disk spill, size estimator); `source`: stored or
  captured source attention of one step.
* `prompts` / `editors`: prompt-to-prompt replace / refine / reweight with per-step and per-word schedules.
* `blend`: blend masks from cross-attention (fixed threshold or Otsu).
* `fresco`: FRESCO's cross-frame, spatial- and temporal-guided attention and feature optimisation.
"""

from .blend import BlendMask, otsu_threshold, word_map
from .controller import (
    AttentionController,
    EditMode,
    LayerPolicy,
    LayerSlot,
    VideoEditingAttention,
    WordMapAccumulator,
)
from .editors import CrossAttentionEditor
from .errors import EditingStateError, MemoryBudgetError, PromptWordError
from .frames import SELF, BatchLayout, FrameKV, frame_attention
from .fresco import (
    FeatureOptimizer,
    OcclusionKV,
    Trajectories,
    build_trajectories,
    occlusion_keep_mask,
)
from .source import CapturedSource, StoredSource
from .store import AttentionStore, estimate_store_bytes

__all__ = [
    "SELF",
    "AttentionController",
    "AttentionStore",
    "BatchLayout",
    "BlendMask",
    "CapturedSource",
    "CrossAttentionEditor",
    "EditMode",
    "EditingStateError",
    "FeatureOptimizer",
    "FrameKV",
    "LayerPolicy",
    "LayerSlot",
    "MemoryBudgetError",
    "OcclusionKV",
    "PromptWordError",
    "StoredSource",
    "Trajectories",
    "VideoEditingAttention",
    "WordMapAccumulator",
    "build_trajectories",
    "estimate_store_bytes",
    "frame_attention",
    "occlusion_keep_mask",
    "otsu_threshold",
    "word_map",
]

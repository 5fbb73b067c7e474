"""The "quantized" method: the plan of the call, or every block, computed in 8 bits."""

from __future__ import annotations

from diffattn.configs.sparse import QuantizedConfig

from ..base import AttentionCall, merge_kernel_options
from .common import BlockSparseMethod, attach_plan, dense_plan

__all__ = ["QuantizedMethod"]


class QuantizedMethod(BlockSparseMethod):
    """Sets the kernel precision of a call's plan; attaches the every-block plan when no other method planned."""

    config: QuantizedConfig
    chain_last = True

    def refine(self, call: AttentionCall) -> AttentionCall:
        if call.stats.enabled:
            call.record(quantized_calls=1)  # the calls this method set in 8 bits, per layer and step
        if call.plan is not None:
            return call.replace(kernel_options=merge_kernel_options(call.kernel_options, self.kernel_options()))
        layout = call.layout
        plan = dense_plan(layout.q_blocks, layout.kv_blocks, layout.block_q, layout.block_k, call.query.device)
        return attach_plan(call, plan, **self.kernel_options())

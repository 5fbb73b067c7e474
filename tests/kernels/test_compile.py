"""torch.compile(fullgraph=True) traces through the kernels' custom ops: no graph break."""

from __future__ import annotations

import pytest
import torch

from diffattn.kernels import block_sparse_attention

from ._kernel_testing import qkv, random_plan, rel_err, triton_or_skip

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)


def test_fullgraph_compile_through_triton_op():
    triton_or_skip()
    torch._dynamo.reset()
    plan = random_plan(1, 2, 130, 130, 64, 64, (1, 2))
    q, k, v = qkv(1, 2, 130, 130, 64, torch.bfloat16)
    eager = block_sparse_attention(q, k, v, plan, backend="triton", return_lse=True)  # validates the plan once

    @torch.compile(fullgraph=True, backend="aot_eager")
    def attend(q, k, v):
        res = block_sparse_attention(q, k, v, plan, backend="triton", return_lse=True)
        return res.out * 2, res.lse

    out, lse = attend(q, k, v)
    assert rel_err(out, eager.out * 2) < 1e-6 and torch.equal(lse, eager.lse)

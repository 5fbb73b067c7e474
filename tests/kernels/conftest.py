"""Runs the Triton kernels on the CPU through Triton's interpreter for the kernel tests.

`TRITON_INTERPRET=1` must be set before `diffattn.kernels` is first imported (Triton decides interpretation
when a kernel is defined), so it is set here, at collection time. If the whole suite imported the kernels
earlier without it, the Triton comparisons skip and say why (`_kernel_testing.triton_or_skip`).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

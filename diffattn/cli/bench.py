"""`diffattn bench`: time our attention kernels against dense attention on this device."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import NotAvailableYetError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the attention kernels on this device")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYetError("the kernel benchmark is not part of this version of diffattn yet")

"""`diffattn edit {fatezero,realcraft,fresco}`: zero-shot video editing (arrives with the editing pipelines)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import NotAvailableYetError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("edit", help="zero-shot video editing (FateZero, RealCraft, FRESCO)")
    parser.add_argument("editor", nargs="?", choices=("fatezero", "realcraft", "fresco"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYetError("video editing is not part of this version of diffattn yet")

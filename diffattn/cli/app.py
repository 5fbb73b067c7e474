"""`diffattn app`: the Gradio demo."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import NotAvailableYetError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("app", help="launch the Gradio demo")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYetError("the Gradio demo is not part of this version of diffattn yet")

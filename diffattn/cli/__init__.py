"""The `diffattn` command: `info`, `demo`, `generate`, `edit`, `bench`, `app`.

Each subcommand is a module here with `add_parser(subparsers)` and `run(args) -> int`. Errors that diffattn
raises on purpose (`DiffAttnError`) and malformed arguments are printed as one clear line with exit status 2.
"""

from __future__ import annotations

import importlib
import sys

from ..errors import DiffAttnError
from ..notices import quiet_library_notices
from .options import CommandParser

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("info", "demo", "generate", "edit", "bench", "app")


def build_parser() -> CommandParser:
    """The `diffattn` parser; each subcommand's parser is also its namespace's `parser` (for its errors)."""
    parser = CommandParser(
        prog="diffattn", description="Training-free attention extensions for Hugging Face diffusers."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
        subparsers.choices[name].set_defaults(parser=subparsers.choices[name])
    return parser


@quiet_library_notices()  # only the known harmless library notices (diffattn.notices), for this command only
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "parser", parser).refuse_unknown(unknown)
    if args.version:
        from .. import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except DiffAttnError as exc:
        print(f"diffattn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffattn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

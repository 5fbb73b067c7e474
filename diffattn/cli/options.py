"""What the subcommands share: one-line argument errors, typed flags, method flags documented from the config
classes, the default size limits, and output locations checked before a run starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ConfigError

__all__ = [
    "CommandParser",
    "typed",
    "INTEGER",
    "NUMBER",
    "method_flag",
    "add_method_flags",
    "method_settings",
    "method_names",
    "add_limits_flag",
    "check_limits",
    "output_file",
    "output_folder",
    "video_output",
]

_PREFIX = "method__"
_ARGUMENT = re.compile(r"^argument (\S+?): ")


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line plus a pointer to `--help`, not the whole usage (which
    lists every method flag); its subparsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        """Print `<prog>: error: <flag>: <what was wrong>` and how to see the flags; exit with status 2."""
        message = _ARGUMENT.sub(r"\1: ", message)
        self.exit(2, f"{self.prog}: error: {message}\nrun `{self.prog} --help` to see the flags\n")

    def refuse_unknown(self, unknown: list[str]) -> NoReturn:
        """Report arguments this parser does not take, suggesting the closest flag for the first unknown one."""
        flags = [flag for action in self._actions for flag in action.option_strings]
        close = difflib.get_close_matches(unknown[0].split("=", 1)[0], flags, n=1)
        self.error(f"unrecognized arguments: {' '.join(unknown)}" + (f"; did you mean {close[0]}?" if close else ""))


def typed(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse `type` that parses with `parse` and fails as 'expected <expected>, got <text>'."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError, ArithmeticError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert


INTEGER = typed(int, "a whole number")
NUMBER = typed(float, "a number")


def method_flag(method: str, field: str) -> str:
    """`--<method>-<field>` with dashes."""
    return f"--{method}-{field.replace('_', '-')}"


def _shown(value: Any) -> str:
    """A default as one would type it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "empty"
    return str(value)


def _default(field: dataclasses.Field) -> Any:
    """A dataclass field's default value."""
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def add_method_flags(parser: argparse.ArgumentParser, classes: Iterable[type]) -> None:
    """One `--<method>-<field>` flag per field of each config class, grouped per method, parsed by the field's
    type; its help is the field's entry in the class's `Args:` docstring and its default."""
    from ..config import describe_type, field_parser
    from ..docstrings import field_docs

    for cls in classes:
        group = parser.add_argument_group(f"{cls.name} settings", cls.description)
        docs, types_ = field_docs(cls), cls.field_types()
        for field in dataclasses.fields(cls):
            text = f"{docs.get(field.name, '')} (default: {_shown(_default(field))})".strip()
            group.add_argument(
                method_flag(cls.name, field.name), dest=f"{_PREFIX}{cls.name}__{field.name}",
                type=typed(field_parser(types_[field.name]), describe_type(types_[field.name])),
                default=argparse.SUPPRESS, metavar=field.name.upper(), help=text.replace("%", "%%"),
            )


def method_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The method settings given as flags: method name -> {field: value}."""
    settings: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith(_PREFIX):
            method, field = key[len(_PREFIX):].split("__", 1)
            settings.setdefault(method, {})[field] = value
    return settings


def method_names(values: list[str] | None, flag: str) -> list[str]:
    """The names of a repeatable, comma-separated flag; given but naming nothing (`--method ""`) is an error,
    not a silent run without methods."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    if values is not None and not names:
        raise ConfigError(f"{flag} {' '.join(map(repr, values))} names no method; give names such as "
                          f"{flag} sparge (`diffattn info` lists them) or leave the flag out")
    return names


def add_limits_flag(parser: argparse.ArgumentParser) -> None:
    """`--no-limits`: lift the default caps shared with the app."""
    from ..limits import DEFAULT_LIMITS as caps

    parser.add_argument("--no-limits", action="store_true",
                        help=f"lift the default caps ({caps.max_steps} steps, {caps.max_frames} frames, "
                             f"{caps.max_side} px height or width; the app's too) that refuse a typo's hours-long run")


def check_limits(args: argparse.Namespace, **sizes: int | None) -> None:
    """Raise `ConfigError` for sizes beyond the default caps unless `--no-limits` was given."""
    from ..limits import DEFAULT_LIMITS

    if not args.no_limits:
        DEFAULT_LIMITS.check(**sizes, where=" by default (--no-limits lifts the caps)")


def _check_writable(folder: Path, flag: str, given: str) -> None:
    """Raise `ConfigError` unless files can be created in `folder`, or in the nearest existing folder above it
    (where it will be created)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {given}: {existing} is a file, not a folder; choose another location")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {given}: cannot write in {existing} ({exc.strerror or exc}); choose another location") from None


def output_file(given: str, flag: str) -> Path:
    """The path a file will be written to after the run, checked now: not a folder, and a writable location."""
    if given.endswith(("/", os.sep)) or Path(given).is_dir():
        raise ConfigError(f"{flag} {given} is a folder; give a file name inside it")
    _check_writable(Path(given).parent, flag, given)
    return Path(given)


def video_output(given: str, flag: str = "--out") -> Path:
    """`output_file` for the run's video, which must be named `.mp4` (what is written)."""
    from ..media.video import check_video_path

    output_file(given, flag)
    return check_video_path(given)


def output_folder(given: str, flag: str) -> Path:
    """A folder outputs will be written into, checked now: not a file, and in a writable location."""
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {given} is a file; give a folder")
    _check_writable(path, flag, given)
    return path

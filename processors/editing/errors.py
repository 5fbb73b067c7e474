"""Errors of the editing methods (subclasses of `diffattn.DiffAttnError`, caught and printed by the CLI)."""

from __future__ import annotations

from diffattn.errors import ConfigError, DiffAttnError

__all__ = ["EditingStateError", "MemoryBudgetError", "PromptWordError"]


class PromptWordError(ConfigError):
    """A word named in the settings (blend word, reweighted word, ...) is not in its prompt, or the prompts do not
    fit the chosen mode (replace mode needs the same word count)."""


class MemoryBudgetError(DiffAttnError, MemoryError):
    """The attention store would exceed the RAM budget and the free disk space; the message names both limits."""


class EditingStateError(DiffAttnError, RuntimeError):
    """The editing controller was driven inconsistently (e.g. an edit pass without a source step); a bug in the caller."""

"""The `DiffAttnError` hierarchy: every error diffattn raises on purpose says what was wrong and what to do."""

from __future__ import annotations

__all__ = [
    "DiffAttnError",
    "ConfigError",
    "UnsupportedModelError",
    "UnknownMethodError",
    "AlreadyAppliedError",
    "IncompatibleMethodsError",
    "BackendUnavailableError",
    "PlanError",
    "GridError",
    "VideoReadError",
]


class DiffAttnError(Exception):
    """Base class of every error diffattn raises deliberately."""


class ConfigError(DiffAttnError, ValueError):
    """A configuration value is out of range or inconsistent."""


class UnsupportedModelError(DiffAttnError, TypeError):
    """The object is not a supported pipeline or denoiser model."""


class UnknownMethodError(DiffAttnError, KeyError):
    """A method name is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class AlreadyAppliedError(DiffAttnError, RuntimeError):
    """diffattn is already applied to this model; remove the first handle before applying again."""


class IncompatibleMethodsError(DiffAttnError, ValueError):
    """Two methods were asked for together that cannot compose."""


class BackendUnavailableError(DiffAttnError, RuntimeError):
    """An attention backend was requested by name but cannot run here."""


class PlanError(DiffAttnError, ValueError):
    """A block plan is malformed or does not match the attention inputs."""


class GridError(DiffAttnError, ValueError):
    """The latent grid of a model call cannot be recovered or does not match the token count."""


class VideoReadError(DiffAttnError, OSError):
    """A video could not be read: missing, unreadable, corrupt or empty."""

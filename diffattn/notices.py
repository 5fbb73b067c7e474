"""Known harmless notices of the libraries diffattn drives, silenced only where diffattn's own code triggers them.

Each entry names the library logger or warning, the exact message, and why it is harmless here; anything else, from
the same loggers or not, still comes through. `quiet_library_notices()` is a context manager (and decorator) for
diffattn's entry points: the `diffattn` command, the tiny test models, and building editing pipelines from a loaded
one. Nothing is silenced globally or after the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

__all__ = ["LOG_NOTICES", "WARNING_NOTICES", "quiet_library_notices"]

LOG_NOTICES: tuple[tuple[str, str], ...] = (
    # transformers resolves `CLIPImageProcessor` (imported by diffusers' pipeline modules) to its PIL version when
    # torchvision is absent; diffattn never uses image processors, so the fallback changes nothing.
    ("transformers.utils.import_utils", r"^`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+Pil`"),
    # diffusers' ModelMixin.to() warns on every dtype cast, even when no module must stay in float32 (the list is
    # empty): from_pipe, AnimateDiff's UNet2D -> UNetMotion conversion and casting a tiny model all cast this way.
    ("diffusers.models.modeling_utils", r"^There are modules in \w+ that should be kept in float32: \[\]\."),
)
"""(logger name, message pattern) of known harmless log records."""

WARNING_NOTICES: tuple[tuple[type[Warning], str, str], ...] = (
    # Mochi computes its rotary frequencies under `torch.autocast(device, torch.float32)`; on the CPU torch refuses
    # a float32 autocast and disables it, which is exactly the float32 computation Mochi asked for.
    (UserWarning, r"In CPU autocast, but the target dtype is not supported", r"diffusers\.models\.transformers\.transformer_mochi"),
)
"""(category, message pattern, module pattern) of known harmless Python warnings."""


class _DropKnown(logging.Filter):
    """Drops the records whose message matches `pattern`."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def quiet_library_notices() -> Iterator[None]:
    """Within the block, drop exactly the `LOG_NOTICES` records and `WARNING_NOTICES` warnings (nothing else)."""
    installed = [(logging.getLogger(name), _DropKnown(pattern)) for name, pattern in LOG_NOTICES]
    for logger, dropper in installed:
        logger.addFilter(dropper)
    try:
        with warnings.catch_warnings():
            for category, message, module in WARNING_NOTICES:
                warnings.filterwarnings("ignore", message=message, category=category, module=module)
            yield
    finally:
        for logger, dropper in installed:
            logger.removeFilter(dropper)

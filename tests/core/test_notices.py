"""Log hygiene: the known harmless library notices are dropped where diffattn triggers them, and nothing else;
a run of the `diffattn` command writes only its named progress bars to stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from diffattn.notices import quiet_library_notices

ROOT = Path(__file__).resolve().parents[2]
EMPTY_FP32 = ("There are modules in UNet2DConditionModel that should be kept in float32: []. Casting directly with "
              "`to()` can lead to inconsistent results; set `torch_dtype` in `from_pretrained()` instead.")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def collected():
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("diffusers.models.modeling_utils", "transformers.utils.import_utils")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.messages
    for logger in loggers:
        logger.removeHandler(handler)


def test_only_the_known_notices_are_dropped_and_only_inside_the_block(collected):
    fp32 = logging.getLogger("diffusers.models.modeling_utils")
    fallback = logging.getLogger("transformers.utils.import_utils")
    torchvision = "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` ..."
    kept = "There are modules in UNet2DConditionModel that should be kept in float32: ['norm']. Casting ..."
    with quiet_library_notices():
        fp32.warning(EMPTY_FP32)
        fallback.warning(torchvision)
        fp32.warning(kept)  # a non-empty list matters: it still comes through
        fallback.warning("Could not import module 'X'")
    fp32.warning(EMPTY_FP32)  # outside the block nothing is filtered
    assert collected == [kept, "Could not import module 'X'", EMPTY_FP32]


def test_mochi_cpu_autocast_warning_is_dropped_but_other_warnings_pass():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_library_notices():
            warnings.warn_explicit("In CPU autocast, but the target dtype is not supported. Disabling autocast.",
                                   UserWarning, "transformer_mochi.py", 286,
                                   module="diffusers.models.transformers.transformer_mochi")
            warnings.warn_explicit("In CPU autocast, but the target dtype is not supported. Disabling autocast.",
                                   UserWarning, "mine.py", 1, module="my_model")
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "In CPU autocast, but the target dtype is not supported. Disabling autocast.", "something else"]


def _stderr_lines(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "diffattn", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.strip() for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]


def test_generate_and_edit_write_only_named_progress_bars_to_stderr(tmp_path):
    """Mochi on the CPU (autocast warning), an edit (from_pipe's float32 notices, two loops), and diffusers' pipeline
    imports (the torchvision notice): stderr holds progress bars named after their phase and nothing else."""
    generate = _stderr_lines("generate", "--model", "tiny:mochi", "--out", str(tmp_path / "g.mp4"))
    edit = _stderr_lines("edit", "fatezero", "--steps", "2", "--out", str(tmp_path / "e.mp4"))
    assert generate and all(line.startswith("denoise:") for line in generate), generate
    assert edit and all(line.startswith(("inversion:", "edit:")) for line in edit), edit
    assert {line.split(":")[0] for line in edit} == {"inversion", "edit"}

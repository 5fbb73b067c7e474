"""What every quality row shares: the row record, the run settings and the trained pipelines they load."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from diffattn.shapes.evaluate import heldout_captions

__all__ = ["Scale", "QualityRow", "QualitySettings", "load_model", "captions"]

Scale = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class QualityRow:
    """One row of the quality table: ``method`` (at ``setting``) against ``baseline`` on ``model``.

    ``metrics`` holds the measured values (name -> number, the method's and the baseline's side by side where both
    exist); ``verdict`` says whether the method matched or beat its baseline on the row's ``criterion`` (``None``
    where the row has no baseline to beat); ``note`` is what the table says beside it (e.g. the setting that would
    help where the method loses); ``series`` holds per-step or per-frame values (e.g. LiteAttention's skipped
    fraction per step).
    """

    group: str
    method: str
    model: str
    baseline: str
    criterion: str
    metrics: dict[str, float | int | None]
    verdict: bool | None
    setting: str = "defaults"
    note: str = ""
    series: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QualitySettings:
    """How big a quality run is. ``cpu`` (the default, what the tests use) keeps each group to a few CPU minutes;
    ``gpu`` samples more captions and seeds at the models' full step counts.

    Args:
        scale: ``"cpu"`` or ``"gpu"``.
        samples: captions (one seed each) per comparison; ``None``: 4 on ``cpu``, 32 on ``gpu``.
        steps: sampling steps; ``None``: 10 on ``cpu``, the model's 20 on ``gpu``.
        seed: seed of the captions and of every sample's noise.
        device: where the pipelines run (``"cpu"``, ``"cuda"``).
        weights: a folder holding ``shapes-wan`` / ``shapes-sd`` training outputs to use instead of the shipped ones,
            or ``"untrained"`` for the models' random initialisation (structural tests: the numbers mean nothing).
    """

    scale: Scale = "cpu"
    samples: int | None = None
    steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    weights: str | None = None

    @property
    def n(self) -> int:
        return self.samples if self.samples is not None else (4 if self.scale == "cpu" else 32)

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else (10 if self.scale == "cpu" else 20)


def load_model(name: str, settings: QualitySettings) -> Any:
    """The trained pipeline ``name`` on ``settings.device`` (float32), from ``settings.weights`` when given."""
    from diffattn.shapes.models import build_pipeline, load_trained

    if settings.weights == "untrained":
        return build_pipeline(name).to(settings.device)
    folder = Path(settings.weights) / name if settings.weights else None
    return load_trained(name, folder=folder).to(settings.device)


def captions(settings: QualitySettings, *, image: bool = False, max_objects: int = 1) -> tuple[list[str], list[int]]:
    """``settings.n`` held-out captions (scenes not seen in training) and their seeds ``settings.seed + i``."""
    texts = heldout_captions(settings.n, settings.seed, max_objects=max_objects, image=image)
    return texts, [settings.seed + index for index in range(len(texts))]

"""Quality of every method on the trained shapes-world models, scored against dense/stock sampling with the world's
ground truth (:mod:`~diffattn.shapes.score`). ``benchmarks/quality.py`` runs it and writes the table; the CPU-sized
run's thresholds are tests.

Each group is one function ``rows(settings) -> list[QualityRow]`` registered in :data:`GROUPS`.
"""

from diffattn.shapes.quality.common import QualityRow, QualitySettings, Scale, captions, load_model

__all__ = ["GROUPS", "QualityRow", "QualitySettings", "Scale", "captions", "load_model", "run_groups"]

GROUPS: dict[str, str] = {
    "sparse": "diffattn.shapes.quality.sparse:rows",
    "editing": "diffattn.shapes.quality.editing:rows",
    "initno": "diffattn.shapes.quality.initno:rows",
    "freeswim": "diffattn.shapes.quality.freeswim:rows",
    "noise": "diffattn.shapes.quality.noise:rows",
}
"""Group name -> ``module:function`` (imported when run, so one group's dependencies do not load the others')."""


def run_groups(names: list[str], settings: QualitySettings) -> list[QualityRow]:
    """The rows of the groups ``names`` (keys of :data:`GROUPS`), in that order."""
    import importlib

    rows: list[QualityRow] = []
    for name in names:
        if name not in GROUPS:
            raise ValueError(f"unknown quality group {name!r}; choose from {', '.join(GROUPS)}")
        module, function = GROUPS[name].split(":")
        rows += getattr(importlib.import_module(module), function)(settings)
    return rows

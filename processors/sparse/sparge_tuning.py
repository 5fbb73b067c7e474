"""`tune_sparge`: calibrate SpargeAttn per layer and head against dense attention, saved to and loaded from JSON.

As SpargeAttn's autotune does: while the pipeline runs dense on calibration prompts, every
self-attention call of every layer is searched, head by head: for each self-similarity threshold
theta in {-1, -15/16, ..., 15/16}, bisect the smallest TopCdf tau whose output has relative L1 error below `l1`,
then the smallest P.V threshold below `pv_l1`; stop raising theta once sparsity falls under 0.1. Candidates
accumulate over calls and prompts; each head takes, from the theta bin (width 1/8) with the largest summed
sparsity, the largest theta, tau and P.V threshold, and goes dense for good when that bin's mean sparsity is at
most 0.1.

    tuning = diffattn.tune_sparge(pipe, ["a fox in the snow", "a city at night"], path="sparge.json")
    diffattn.apply(pipe, diffattn.SpargeConfig(tuned="sparge.json"))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffattn.config import check
from diffattn.configs.sparse import BlockSparseConfig, SpargeConfig
from diffattn.errors import ConfigError

__all__ = ["SpargeLayerSettings", "SpargeTuning", "SpargeCalibrationConfig", "tune_sparge", "TUNING_FORMAT"]

TUNING_FORMAT = 1
"""Version of the JSON layout written by `SpargeTuning.save`."""


@dataclass(frozen=True)
class SpargeLayerSettings:
    """Tuned SpargeAttn settings of one attention layer, one value per head.

    Args:
        sim_threshold (`tuple[float, ...]`): self-similarity threshold theta (1.0 for dense heads).
        cdf_threshold (`tuple[float, ...]`): TopCdf tau (1.0 for dense heads).
        pv_threshold (`tuple[float, ...]`): P.V skip threshold, log2 units.
        sparsity (`tuple[float, ...]`): mean sparsity measured while tuning.
        dense (`tuple[bool, ...]`): heads left dense (sparsity at most 0.1 at the error target).
    """

    sim_threshold: tuple[float, ...]
    cdf_threshold: tuple[float, ...]
    pv_threshold: tuple[float, ...]
    sparsity: tuple[float, ...]
    dense: tuple[bool, ...]

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, name)) for name in ("sim_threshold", "cdf_threshold", "pv_threshold", "sparsity", "dense")}
        if len(lengths) != 1 or 0 in lengths:
            raise ConfigError(f"tuned layer settings need one value per head in every field; got lengths {sorted(lengths)}")

    @property
    def heads(self) -> int:
        return len(self.dense)


@dataclass
class SpargeTuning:
    """Result of `tune_sparge`: per-layer settings plus the targets they were tuned for.

    Args:
        l1 (`float`): relative L1 error target of block selection.
        pv_l1 (`float`): relative L1 error target with P.V skipping.
        calls (`int`): attention calls the settings were tuned on (over all layers).
        layers (`dict[str, SpargeLayerSettings]`): by attention layer name, e.g. `"blocks.3.attn1"`.
        block_q (`int`, defaults to `64`): query block size the settings hold for (`SpargeConfig.query_block`).
    """

    l1: float
    pv_l1: float
    calls: int = 0
    layers: dict[str, SpargeLayerSettings] = field(default_factory=dict)
    block_q: int = SpargeConfig.default_block_q

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": SpargeConfig.name,
            "format": TUNING_FORMAT,
            "l1": self.l1,
            "pv_l1": self.pv_l1,
            "calls": self.calls,
            "block_q": self.block_q,
            "layers": {name: {k: list(v) for k, v in asdict(s).items()} for name, s in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpargeTuning:
        if data.get("method") != SpargeConfig.name or data.get("format") != TUNING_FORMAT:
            raise ConfigError(
                f"not a SpargeAttn tuning file of format {TUNING_FORMAT} (method={data.get('method')!r}, "
                f"format={data.get('format')!r}); write one with diffattn.tune_sparge"
            )
        try:
            layers = {
                name: SpargeLayerSettings(**{k: tuple(v) for k, v in settings.items()})
                for name, settings in data["layers"].items()
            }
            return cls(float(data["l1"]), float(data["pv_l1"]), int(data["calls"]), layers, int(data["block_q"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed SpargeAttn tuning data ({exc}); write it again with diffattn.tune_sparge") from exc

    def save(self, path: str | Path) -> Path:
        """Write the settings as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SpargeTuning:
        """Read settings written by `save`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read SpargeAttn tuning file {str(path)!r}: {exc}") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class SpargeCalibrationConfig(BlockSparseConfig):
    """Settings of the calibration pass `tune_sparge` installs (attention stays exactly dense meanwhile).

    Args:
        l1 (`float`, defaults to `0.06`): relative L1 error target of block selection.
        pv_l1 (`float`, defaults to `0.065`): relative L1 error target with P.V skipping; must exceed `l1`.
        tune_pv (`bool`, defaults to `True`): also tune the P.V threshold (else it stays at 50, almost never skipping).
    """

    name = "sparge-calibration"
    description = "SpargeAttn calibration against dense attention (used by diffattn.tune_sparge)"
    implementation = "diffattn.processors.sparse.sparge:SpargeCalibration"
    default_block_q = SpargeConfig.default_block_q

    l1: float = 0.06
    pv_l1: float = 0.065
    tune_pv: bool = True

    def validate(self) -> None:
        super().validate()
        check(0.0 < self.l1 < 1.0, f"l1 must lie in (0, 1); got {self.l1}")
        check(self.l1 < self.pv_l1 < 1.0, f"pv_l1 must lie in (l1={self.l1}, 1); got {self.pv_l1}")


def tune_sparge(
    pipe: Any,
    prompts: Sequence[str],
    l1: float = 0.06,
    pv_l1: float = 0.065,
    *,
    path: str | Path | None = None,
    tune_pv: bool = True,
    min_tokens: int = 512,
    query_block: int | None = None,
    backend: str = "auto",
    **call_kwargs: Any,
) -> SpargeTuning:
    """Calibrate SpargeAttn on `pipe` (dense runs on `prompts`) per layer and head; optionally save to `path`.

    Args:
        pipe: a diffusers video pipeline of a supported family.
        prompts (`Sequence[str]`): calibration prompts; each runs `pipe(prompt=..., **call_kwargs)` once.
        l1 (`float`, defaults to `0.06`): relative L1 error target (SpargeAttn's Wan example; its default is 0.07).
        pv_l1 (`float`, defaults to `0.065`): target with P.V skipping, above `l1` (SpargeAttn's Wan example).
        path (`str`, *optional*): write the JSON settings here (load them with `SpargeConfig(tuned=path)`).
        tune_pv (`bool`, defaults to `True`): tune the P.V threshold too.
        min_tokens (`int`, defaults to `512`): shorter calls are not tuned (they stay dense at inference too).
        query_block (`int`, *optional*): query block size to tune for (`SpargeConfig.query_block`; default 64).
        backend (`str`, defaults to `"auto"`): kernel backend of the trial runs.
        **call_kwargs: further pipeline arguments (size, steps, guidance, generator, ...).

    Returns:
        `SpargeTuning` with the settings of every layer that was tuned.
    """
    from diffattn.api import apply

    if isinstance(prompts, str) or not prompts:
        raise ConfigError("prompts must be a non-empty list of calibration prompts")
    config = SpargeCalibrationConfig(
        l1=l1, pv_l1=pv_l1, tune_pv=tune_pv, min_tokens=min_tokens, query_block=query_block, backend=backend
    )
    with apply(pipe, config) as handle:
        for prompt in prompts:
            pipe(prompt=prompt, **call_kwargs)
        calibration = handle.methods[0]
        tuning = SpargeTuning(l1, pv_l1, calibration.calls, calibration.settings(), config.block_q)
    if not tuning.layers:
        raise ConfigError(
            f"no attention call was long enough to tune (min_tokens={min_tokens} video tokens); "
            "calibrate at the resolution and length you will generate"
        )
    if path is not None:
        tuning.save(path)
    return tuning

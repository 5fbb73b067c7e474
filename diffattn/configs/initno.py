"""`initno`: InitNO's settings (the method is `diffattn.pipelines.initno`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MethodConfig, check, check_range
from ..registry import register_method

__all__ = ["InitNOConfig"]


@register_method
@dataclass(frozen=True)
class InitNOConfig(MethodConfig):
    """InitNO (Guo et al., CVPR 2024): optimises the initial noise of Stable Diffusion 1.x/2.x before sampling.

    Subject tokens (from `words` or raw `token_indices`, SOT counted as 0) must each get a strong cross-attention
    response (`S_CA < tau_cross`) without their self-attention maps overlapping (`S_SA < tau_self`). The noise is
    reparametrised by a mean and log-variance, optimised with Adam and projected back towards N(0, I) by a KL
    inner loop; failed rounds resample the noise, and the best round gets a longer fallback run. Sampling then uses
    Attend-and-Excite style latent updates (as InitNO's run script). Runs through
    `diffattn.pipelines.InitNOPipeline` (`diffattn.apply(sd_pipe, InitNOConfig(...))` routes `sd_pipe(...)` there).

    Args:
        words (`tuple[str, ...]`, defaults to `()`):
            Subject words of the prompt (their first token is used).
        token_indices (`tuple[int, ...]`, defaults to `()`):
            Subject token positions (SOT = 0), used in addition to `words`.
        attn_res (`tuple[int, int]`, *optional*):
            Resolution of the attention maps. `None`: the coarsest attention resolution of the UNet's down and up
            blocks at the call's size (16×16 for SD 1.x at 512 px, as InitNO; 8×8 for the tiny test UNet).
        max_rounds (`int`, defaults to `5`):
            Rounds of optimisation, each from fresh noise after a failure.
        steps_per_round (`int`, defaults to `10`):
            Optimiser steps per round.
        fallback_steps (`int`, defaults to `50`):
            Optimiser steps of the fallback run from the best round's noise when no round succeeded.
        lr (`float`, defaults to `1e-2`):
            Adam learning rate (eps 1e-3).
        tau_cross / tau_self (`float`, defaults to `0.2` / `0.3`):
            Success thresholds on S_CA and S_SA.
        kl_threshold (`float`, defaults to `1e-3`):
            The KL inner loop runs until the KL term is at most this.
        kl_max_steps (`int`, defaults to `1000`):
            Bound on KL steps after one optimiser step (the original has none).
        smooth (`bool`, defaults to `True`):
            3×3 Gaussian smoothing (σ = 0.5) of the maps.
        attend_and_excite (`bool`, defaults to `True`):
            Gradient updates of the latents on S_CA during the first `max_iter_to_alter` steps, with iterative
            refinement at `refinement_steps`.
        max_iter_to_alter (`int`, defaults to `25`):
            Denoising steps with updates.
        scale_factor (`float`, defaults to `20.0`):
            Update step size `scale_factor · sqrt(linspace(1, 0.5, N))[i]`.
        refinement_steps (`tuple[int, ...]`, defaults to `(10, 20)`):
            Steps with iterative refinement while `S_CA > 0.2` or `S_SA > 0.3`.
        max_refinement_steps (`int`, defaults to `20`):
            Iterations of one refinement.
    """

    name = "initno"
    description = "InitNO: initial-noise optimisation on cross-/self-attention scores (Stable Diffusion 1.x/2.x)"
    category = "noise"
    implementation = "diffattn.pipelines.initno:InitNOMethod"
    runner = "diffattn.pipelines.initno:run_initno"
    scope = "pipeline"
    tiny_models = ("sd",)
    tiny_settings = {"words": ("squirrel", "burger"), "max_rounds": 1, "steps_per_round": 1, "fallback_steps": 1}

    words: tuple[str, ...] = ()
    token_indices: tuple[int, ...] = ()
    attn_res: tuple[int, int] | None = None
    max_rounds: int = 5
    steps_per_round: int = 10
    fallback_steps: int = 50
    lr: float = 1e-2
    tau_cross: float = 0.2
    tau_self: float = 0.3
    kl_threshold: float = 1e-3
    kl_max_steps: int = 1000
    smooth: bool = True
    attend_and_excite: bool = True
    max_iter_to_alter: int = 25
    scale_factor: float = 20.0
    refinement_steps: tuple[int, ...] = (10, 20)
    max_refinement_steps: int = 20

    def validate(self) -> None:
        super().validate()
        check(all(isinstance(w, str) and w.strip() for w in self.words), f"words must be non-empty strings; got {self.words!r}")
        check(all(isinstance(i, int) and i >= 1 for i in self.token_indices),
              f"token_indices must be positive token positions (SOT is 0); got {self.token_indices!r}")
        if self.attn_res is not None:
            check(len(self.attn_res) == 2 and min(self.attn_res) >= 1, f"attn_res must be (height, width); got {self.attn_res!r}")
        for name in ("max_rounds", "steps_per_round"):
            check_range(name, getattr(self, name), 1)
        for name in ("fallback_steps", "max_iter_to_alter", "max_refinement_steps", "kl_max_steps"):
            check_range(name, getattr(self, name), 0)
        for name in ("lr", "kl_threshold", "scale_factor"):
            check(getattr(self, name) > 0, f"{name} must be positive; got {getattr(self, name)!r}")
        check_range("tau_cross", self.tau_cross, 0.0, 1.0)
        check_range("tau_self", self.tau_self, 0.0, 1.0)

    @property
    def optimiser_budget(self) -> int:
        """Most optimiser steps on the attention loss: `max_rounds · steps_per_round + fallback_steps`."""
        return self.max_rounds * self.steps_per_round + self.fallback_steps

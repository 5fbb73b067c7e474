"""InitNO's model-agnostic parts: attention scores, the mean/log-variance noise optimisation and the round search.

Maps come from an attention store (`diffattn.processors.noise.InitNOAttentionStore`) at one resolution `R × R`,
averaged over heads and layers: cross-attention `[R, R, L]` (L text tokens, SOT first) and self-attention
`[R, R, R·R]`. Following InitNO's code:

- cross maps: drop the first and the last text token, `softmax(100·A)` over tokens, shift indices by −1, smooth
  each subject token's map with a 3×3 Gaussian (σ = 0.5, reflect padding);
- **S_CA** `= max_k (1 − max_ij Ã_k)` (the top-1 response of the weakest subject);
- **S_SA**: the self-attention map at each token's cross-attention peak, smoothed; mean over token pairs of
  `Σ min(S_i, S_j) / (Σ (S_i + S_j) + 1e−6)`;
- **clean** term: Otsu-threshold each token map, keep the 4-connected blob holding the peak, and add the largest
  background value when it exceeds the smallest foreground value;
- loss `S_CA + S_SA + clean`, with `S_SA` dropped while `S_CA > 0.5`.

The initial noise is reparametrised as `z' = z·exp(½·logσ²) + μ` (μ = logσ² = 0 at first), optimised with
`Adam(lr, eps=1e−3)`; after every step the KL term `mean(−½·mean(1 + logσ² − μ² − σ²))` is driven below a
threshold by an inner loop on the same optimiser. A round stops as soon as `S_CA < τ_CA` and `S_SA < τ_SA`. Failed
rounds resample the noise; the round with the lowest `S_CA + S_SA` wins, and if none succeeded its initial noise
is optimised again for the longer fallback budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError

__all__ = [
    "NoiseScores",
    "RoundResult",
    "NoiseSearchResult",
    "smooth_maps",
    "subject_cross_maps",
    "response_score",
    "conflict_score",
    "otsu_levels",
    "otsu_foreground",
    "peak_components",
    "clean_score",
    "attention_scores",
    "kl_divergence",
    "reparametrise",
    "optimise_noise",
    "search_initial_noise",
    "subject_token_indices",
]


# --------------------------------------------------------------------------------------------- maps
def _gaussian_kernel(size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma**2))
    return kernel / kernel.sum()


def smooth_maps(maps: torch.Tensor, size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian smoothing of `[..., H, W]` maps (reflect padding, so a constant map stays constant)."""
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:])
    kernel = _gaussian_kernel(size, sigma).to(device=maps.device, dtype=maps.dtype)[None, None]
    padded = F.pad(flat, (size // 2,) * 4, mode="reflect")
    return F.conv2d(padded, kernel).reshape(shape)


def subject_cross_maps(cross: torch.Tensor, indices: Sequence[int], smooth: bool = True) -> torch.Tensor:
    """`[K, R, R]` maps of the subject tokens from aggregated cross-attention `[R, R, L]` (indices count SOT as 0)."""
    probs = torch.softmax(100.0 * cross[..., 1:-1], dim=-1)
    maps = torch.stack([probs[..., i - 1] for i in indices])
    return smooth_maps(maps) if smooth else maps


def _peaks(maps: torch.Tensor) -> torch.Tensor:
    """`[K, 2]` (row, column) of each map's maximum (no gradient)."""
    width = maps.shape[-1]
    flat = maps.detach().flatten(-2).argmax(-1)
    return torch.stack([flat // width, flat % width], dim=-1)


def response_score(maps: torch.Tensor) -> torch.Tensor:
    """S_CA `= max_k max(0, 1 − max_ij map_k)` of subject maps `[K, R, R]`."""
    return (1.0 - maps.flatten(-2).amax(-1)).clamp_min(0.0).max()


def conflict_score(self_maps: torch.Tensor, peaks: torch.Tensor, smooth: bool = True) -> torch.Tensor:
    """S_SA of self-attention `[R, R, R·R]` read at each token's peak `[K, 2]`: mean pairwise overlap (0 if K < 2)."""
    rows, cols = self_maps.shape[:2]
    at_peaks = self_maps[peaks[:, 0], peaks[:, 1]].reshape(-1, rows, cols)
    if smooth:
        at_peaks = smooth_maps(at_peaks)
    count = at_peaks.shape[0]
    if count < 2:
        return at_peaks.sum() * 0.0
    i, j = torch.triu_indices(count, count, offset=1, device=at_peaks.device)
    overlap = torch.minimum(at_peaks[i], at_peaks[j]).flatten(1).sum(-1)
    total = (at_peaks[i] + at_peaks[j]).flatten(1).sum(-1)
    return (overlap / (total + 1e-6)).mean()


def _levels(maps: torch.Tensor) -> torch.Tensor:
    """8-bit grey levels `int(255·x)` of `[K, R, R]` maps, flattened to `[K, R·R]` (InitNO's OpenCV input)."""
    return (maps.detach().flatten(1) * 255).clamp(0, 255).to(torch.long)


def otsu_levels(maps: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold level `t` (as OpenCV's `THRESH_OTSU`) of each `[K, R, R]` map on 8-bit levels; `[K]` long.

    `t` maximises the between-class variance of the levels `≤ t` and `> t`.
    """
    levels = _levels(maps)
    hist = torch.zeros(levels.shape[0], 256, dtype=torch.float64, device=maps.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float64))
    prob = hist / hist.sum(-1, keepdim=True)
    grey = torch.arange(256, dtype=torch.float64, device=maps.device)
    weight0 = prob.cumsum(-1)
    mass0 = (prob * grey).cumsum(-1)
    weight1 = 1.0 - weight0
    between = (mass0[:, -1:] * weight0 - mass0) ** 2 / (weight0 * weight1).clamp_min(1e-12)
    between = torch.where((weight0 > 0) & (weight1 > 0), between, torch.zeros_like(between))
    return between.argmax(-1)


def otsu_foreground(maps: torch.Tensor) -> torch.Tensor:
    """`[K, R, R]` bool: pixels whose 8-bit level is above the map's Otsu level.

    InitNO compares the float map with `t/255` instead, which also counts the threshold's own 8-bit level as
    foreground; with Otsu's classes that level belongs to the background, as here.
    """
    return (_levels(maps) > otsu_levels(maps)[:, None]).reshape(maps.shape)


def peak_components(mask: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """`[K, R, R]` bool: the 4-connected region of each `mask` holding its peak (flood fill by repeated dilation)."""
    region = torch.zeros_like(mask)
    index = torch.arange(mask.shape[0], device=mask.device)
    region[index, peaks[:, 0], peaks[:, 1]] = mask[index, peaks[:, 0], peaks[:, 1]]
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=mask.device)[None, None]
    for _ in range(mask.shape[-1] * mask.shape[-2]):
        grown = (F.conv2d(region[:, None].float(), cross, padding=1)[:, 0] > 0) & mask
        if torch.equal(grown, region):
            break
        region = grown
    return region


def clean_score(maps: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """InitNO's clean term: per token, the largest value outside the peak's blob when it beats the blob's smallest."""
    foreground = peak_components(otsu_foreground(maps), peaks).to(maps.dtype)
    background_max = (maps * (1 - foreground)).flatten(1).amax(-1)
    foreground_min = (maps * foreground + (1 - foreground)).flatten(1).amin(-1)
    return torch.where(background_max > foreground_min, background_max, background_max * 0.0).sum()


@dataclass
class NoiseScores:
    """InitNO's scores of one denoiser pass (tensors, differentiable where they depend on the noise)."""

    cross: torch.Tensor
    self_: torch.Tensor
    clean: torch.Tensor
    maps: torch.Tensor
    """`[K, R, R]` smoothed subject cross-attention maps (for refinement losses and inspection)."""

    @property
    def values(self) -> tuple[float, float]:
        """(S_CA, S_SA) as numbers, `S_SA` reported as 0 while `S_CA > 0.5` (where the loss drops it)."""
        cross = float(self.cross.detach())
        return cross, 0.0 if cross > 0.5 else float(self.self_.detach())

    @property
    def loss(self) -> torch.Tensor:
        """`S_CA + S_SA + clean`, with `S_SA` dropped while `S_CA > 0.5`."""
        self_term = self.self_ * 0.0 if self.values[0] > 0.5 else self.self_
        return self.cross + self_term + self.clean

    def succeeded(self, tau_cross: float, tau_self: float) -> bool:
        cross, self_ = self.values
        return cross < tau_cross and self_ < tau_self


def attention_scores(cross: torch.Tensor, self_maps: torch.Tensor, indices: Sequence[int], smooth: bool = True) -> NoiseScores:
    """All InitNO scores from aggregated maps: cross `[R, R, L]`, self `[R, R, R·R]`, subject token indices."""
    maps = subject_cross_maps(cross, indices, smooth)
    peaks = _peaks(maps)
    return NoiseScores(response_score(maps), conflict_score(self_maps, peaks, smooth), clean_score(maps, peaks), maps)


# ------------------------------------------------------------------------------------ optimisation
def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """`mean(−½·mean(1 + logσ² − μ² − σ²))`: 0 exactly at μ = 0, logσ² = 0."""
    return torch.mean(-0.5 * torch.mean(1 + log_var - mu**2 - log_var.exp()), dim=0)


def reparametrise(noise: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """`noise·exp(½·logσ²) + μ` (the identity at μ = logσ² = 0)."""
    return noise * torch.exp(0.5 * log_var) + mu


@dataclass
class RoundResult:
    """One optimisation run: optimised and initial noise, success, InitNO's ranking score, steps taken."""

    latents: torch.Tensor
    initial: torch.Tensor
    succeeded: bool
    score: float
    steps: int
    kl_steps: int
    scores: list[tuple[float, float]] = field(default_factory=list)
    """(S_CA, S_SA) at every evaluation."""


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, parameters: tuple[torch.Tensor, ...]) -> None:
    """One optimiser step on `loss` w.r.t. `parameters` only (no gradients land on the denoiser's weights)."""
    for parameter, grad in zip(parameters, torch.autograd.grad(loss, parameters)):
        parameter.grad = grad
    optimiser.step()


def _project_kl(optimiser: torch.optim.Optimizer, mu: torch.Tensor, log_var: torch.Tensor, threshold: float, max_steps: int) -> int:
    """Step `optimiser` on the KL term until it is at most `threshold` (at most `max_steps` steps); steps taken."""
    for taken in range(max_steps):
        kl = kl_divergence(mu, log_var)
        if float(kl.detach()) <= threshold:
            return taken
        _step(optimiser, kl, (log_var, mu))
    return max_steps


def optimise_noise(
    noise: torch.Tensor,
    score_fn: Callable[[torch.Tensor], NoiseScores],
    *,
    max_steps: int,
    lr: float = 1e-2,
    tau_cross: float = 0.2,
    tau_self: float = 0.3,
    kl_threshold: float = 1e-3,
    kl_max_steps: int = 1000,
) -> RoundResult:
    """Optimise μ and logσ² of `noise` against `score_fn` for at most `max_steps` optimiser steps.

    `score_fn(latents)` runs the denoiser at the first timestep and returns `NoiseScores`. Each evaluation that
    misses the thresholds is followed by one Adam step on the loss and the KL projection (at most `kl_max_steps`
    inner steps, a safety bound the original does not have). The ranking score is InitNO's `S_CA + S_SA` of the
    last evaluation, plus 1 when `S_SA` vanished (it is dropped while `S_CA > 0.5`).
    """
    initial = noise.detach().clone()
    mu = torch.zeros_like(initial, requires_grad=True)
    log_var = torch.zeros_like(initial, requires_grad=True)
    optimiser = torch.optim.Adam([log_var, mu], lr=lr, eps=1e-3)
    steps = kl_steps = 0
    history: list[tuple[float, float]] = []
    succeeded = False
    cross = self_ = 0.0
    with torch.enable_grad():
        for _ in range(max_steps):
            scores = score_fn(reparametrise(initial, mu, log_var))
            cross, self_ = scores.values
            history.append((cross, self_))
            if scores.succeeded(tau_cross, tau_self):
                succeeded = True
                break
            _step(optimiser, scores.loss, (log_var, mu))
            steps += 1
            kl_steps += _project_kl(optimiser, mu, log_var, kl_threshold, kl_max_steps)
    latents = reparametrise(initial, mu, log_var).detach()
    score = cross + self_ + (1.0 if self_ <= 1e-6 else 0.0)
    return RoundResult(latents, initial, succeeded, score, steps, kl_steps, history)


@dataclass
class NoiseSearchResult:
    """InitNO's search: the chosen latents, whether a round met the thresholds, every round, the fallback run."""

    latents: torch.Tensor
    succeeded: bool
    rounds: list[RoundResult]
    fallback: RoundResult | None

    @property
    def optimiser_steps(self) -> int:
        """Adam steps on the attention loss over all rounds and the fallback (KL steps not counted)."""
        return sum(r.steps for r in self.rounds) + (self.fallback.steps if self.fallback else 0)

    def summary(self) -> dict[str, Any]:
        runs = [*self.rounds, *([self.fallback] if self.fallback else [])]
        return {
            "succeeded": self.succeeded,
            "rounds": len(self.rounds),
            "fallback": self.fallback is not None,
            "optimiser_steps": self.optimiser_steps,
            "kl_steps": sum(r.kl_steps for r in runs),
            "first_scores": runs[0].scores[0] if runs[0].scores else None,
            "final_scores": runs[-1].scores[-1] if runs[-1].scores else None,
        }


def search_initial_noise(
    noise: torch.Tensor,
    sample_noise: Callable[[], torch.Tensor],
    score_fn: Callable[[torch.Tensor], NoiseScores],
    *,
    max_rounds: int = 5,
    steps_per_round: int = 10,
    fallback_steps: int = 50,
    progress: bool = True,
    **optimiser_settings: Any,
) -> NoiseSearchResult:
    """InitNO's rounds: optimise `noise`; on failure resample (`sample_noise()`) and retry; keep the best round.

    At most `max_rounds · steps_per_round + fallback_steps` optimiser steps on the attention loss are taken.
    """
    rounds: list[RoundResult] = []
    current = noise
    for _ in tqdm(range(max_rounds), desc="InitNO rounds", unit="round", disable=not progress):
        result = optimise_noise(current, score_fn, max_steps=steps_per_round, **optimiser_settings)
        rounds.append(result)
        if result.succeeded:
            break
        current = sample_noise()
    best = min(rounds, key=lambda r: r.score)
    if best.succeeded:
        return NoiseSearchResult(best.latents, True, rounds, None)
    fallback = optimise_noise(best.initial, score_fn, max_steps=fallback_steps, **optimiser_settings)
    return NoiseSearchResult(fallback.latents, fallback.succeeded, rounds, fallback)


# ------------------------------------------------------------------------------------------ tokens
def _token_table(ids: list[int], tokenizer: Any) -> str:
    return ", ".join(f"{i}: {t}" for i, t in enumerate(tokenizer.convert_ids_to_tokens(ids)))


def subject_token_indices(tokenizer: Any, prompt: str, words: Sequence[str] = (), indices: Sequence[int] = ()) -> list[int]:
    """Subject token positions in `prompt` (SOT at 0): raw `indices`, then the first sub-token of each of `words`.

    Raises:
        ConfigError: a word is not in the prompt, an index points at a special or missing token, or neither is given.
    """
    ids = list(tokenizer(prompt).input_ids)
    result = []
    for index in indices:
        if not 1 <= index <= len(ids) - 2:
            raise ConfigError(
                f"InitNO token index {index} is not a prompt token of {prompt!r} (valid 1..{len(ids) - 2}: "
                f"{_token_table(ids, tokenizer)})"
            )
        result.append(int(index))
    for word in words:
        piece = list(tokenizer(word.strip(), add_special_tokens=False).input_ids)
        starts = [i for i in range(1, len(ids) - len(piece)) if piece and ids[i:i + len(piece)] == piece]
        if not starts:
            raise ConfigError(
                f"InitNO word {word!r} is not in the prompt {prompt!r}; its tokens are {_token_table(ids, tokenizer)}. "
                "Give words that appear in the prompt, or raw token_indices"
            )
        result.append(starts[0])
    if not result:
        raise ConfigError("InitNO needs the subject tokens: set words (e.g. ('cat', 'rabbit')) or token_indices")
    return result


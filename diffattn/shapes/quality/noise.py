"""Quality group ``noise``: FreeInit and FreeNoise on shapes-wan, for temporal consistency.

Both methods change the initial noise (FreeNoise also fuses self-attention over windows of latent frames), aiming
at clips whose objects stay the same object from frame to frame. The rows measure that with
:func:`~.clips.clip_metrics`: the frame-to-frame warp error, the fraction of frames in which the scorer finds the
captioned object, how steady the main object's colour and shape stay between consecutive frames, and the scorer's
accuracy, each against plain sampling with the same captions and seeds:

- ``freeinit`` at the trained length (9 frames), :func:`freeinit_config`'s iterations;
- ``freenoise`` on a longer clip than trained (:data:`LONG_FRAMES`), with windows of the trained number of latent
  frames (Wan's frame-window variant, which FreeNoise calls experimental), against plain sampling at that length.
  Its row also carries the plain clips at the trained length (``*_trained_length``), what the model does where it
  was trained.

Captions name one object, so "the object" of a clip is unambiguous.
"""

from __future__ import annotations

from diffattn.api import apply
from diffattn.configs.freeinit import FreeInitConfig
from diffattn.configs.freenoise import FreeNoiseConfig
from diffattn.shapes.models import GEOMETRY, sample_kwargs
from diffattn.shapes.quality.clips import clip_metrics, side_by_side, timed_generate, warm_up
from diffattn.shapes.quality.common import QualityRow, QualitySettings, captions, load_model

__all__ = ["CPU_FREEINIT_ITERS", "LONG_FRAMES", "METRICS", "freeinit_config", "freenoise_config", "rows"]

CPU_FREEINIT_ITERS = 2
"""FreeInit iterations at the ``cpu`` scale (each is a full sampling); the ``gpu`` scale runs FreeInit's default."""
LONG_FRAMES = {"cpu": 17, "gpu": 25}
"""Frames of FreeNoise's long clips per scale (5 and 7 latent frames; the model is trained on 9 frames, 3 latent)."""
METRICS = ("warp_error", "found_frames", "detected_frames", "colour_stability", "shape_stability", "accuracy")
"""The :func:`~.clips.clip_metrics` values each row carries for the method and its baseline."""
_TIE = 1e-9
_CRITERION = ("warp error no higher than the baseline's and the captioned object found in at least as large a "
              "fraction of frames")


def freeinit_config(settings: QualitySettings) -> FreeInitConfig:
    """FreeInit at its defaults, with :data:`CPU_FREEINIT_ITERS` iterations at the ``cpu`` scale."""
    return FreeInitConfig(num_iters=CPU_FREEINIT_ITERS) if settings.scale == "cpu" else FreeInitConfig()


def freenoise_config(trained_latent_frames: int) -> FreeNoiseConfig:
    """FreeNoise on Wan: windows of the trained number of latent frames, one frame apart (FreeNoise's stride is a
    quarter of the window; a quarter of 3 rounds to 1), pyramid weights, shuffled noise."""
    return FreeNoiseConfig(context_length=trained_latent_frames, context_stride=1, experimental_dit=True)


def _row(method: str, metrics: dict[str, float | None], baseline: dict[str, float | None], seconds: float,
         baseline_seconds: float, samples: int, *, baseline_name: str, setting: str, extra: dict[str, float | None],
         note: str = "") -> QualityRow:
    """A row of this group: ``method``'s :data:`METRICS` beside ``baseline``'s, the times and ``extra`` values."""
    # found_frames are means of per-clip fractions: equal counts can differ in the last bit
    verdict = (metrics["warp_error"] <= baseline["warp_error"]
               and metrics["found_frames"] >= baseline["found_frames"] - _TIE)
    return QualityRow(
        group="noise", method=method, model="shapes-wan", baseline=baseline_name, criterion=_CRITERION,
        metrics={**side_by_side(metrics, baseline, METRICS), **extra, "seconds": seconds,
                 "seconds_baseline": baseline_seconds, "time_ratio": seconds / baseline_seconds, "samples": samples},
        verdict=verdict, setting=setting, note=note,
    )


def rows(settings: QualitySettings) -> list[QualityRow]:
    """FreeInit at the trained length and FreeNoise on a longer clip, each against plain sampling (see the module)."""
    pipe = load_model("shapes-wan", settings)
    texts, seeds = captions(settings)
    trained = sample_kwargs("shapes-wan", num_inference_steps=settings.num_steps)
    long = {**trained, "num_frames": LONG_FRAMES[settings.scale]}
    latent_frames = (GEOMETRY["shapes-wan"]["num_frames"] - 1) // pipe.vae_scale_factor_temporal + 1
    steps = f"{settings.num_steps} steps"

    warm_up(pipe, texts[0], **trained)
    plain, plain_seconds = timed_generate(pipe, texts, seeds, **trained)
    plain_scores = clip_metrics(plain, texts)
    init = freeinit_config(settings)
    with apply(pipe, init):
        frames, seconds = timed_generate(pipe, texts, seeds, **trained)
    freeinit_row = _row(
        "freeinit", clip_metrics(frames, texts), plain_scores, seconds, plain_seconds, len(texts),
        baseline_name="plain sampling (same captions and seeds)",
        setting=f"{init.num_iters} iterations, {init.filter} filter (spatial/temporal stop {init.spatial_stop}/"
                f"{init.temporal_stop}); {trained['num_frames']} frames, {steps} per iteration",
        extra={"iterations": init.num_iters},
    )

    warm_up(pipe, texts[0], **long)
    plain_long, plain_long_seconds = timed_generate(pipe, texts, seeds, **long)
    noise = freenoise_config(latent_frames)
    with apply(pipe, noise):
        frames, seconds = timed_generate(pipe, texts, seeds, **long)
    freenoise_row = _row(
        "freenoise", clip_metrics(frames, texts), clip_metrics(plain_long, texts), seconds, plain_long_seconds,
        len(texts), baseline_name=f"plain sampling at {long['num_frames']} frames (same captions and seeds)",
        setting=f"experimental frame windows of {noise.context_length} latent frames, stride {noise.context_stride}, "
                f"{noise.weighting} weights, {noise.noise_type} noise; {long['num_frames']} frames, {steps}",
        extra={f"{name}_trained_length": plain_scores[name] for name in METRICS},
        note="Wan's frame-window variant (experimental_dit): not the paper's method, which fuses factorised temporal attention",
    )
    return [freeinit_row, freenoise_row]

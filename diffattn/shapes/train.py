"""Training the shapes-world models: ``python -m diffattn.shapes.train {shapes-wan,shapes-sd} --out DIR --preset gpu``.

Stage 1 trains the VAE to reconstruct world clips (Wan) or frames (SD): MSE (on the decoder's output before Wan's
clamp to [-1, 1]) plus a small KL term. The VAE is then frozen, the whole training set is encoded once, and the
latent statistics are written into the VAE's config (``latents_mean``/``latents_std`` for Wan, ``scaling_factor``
for SD) so the pipeline decodes what the denoiser learnt. Stage 2 trains the denoiser together with the text encoder
on normalised latents: flow matching for Wan in the convention of its ``FlowMatchEulerDiscreteScheduler`` (``x_t =
(1 - s) x_0 + s e``, the model predicts ``e - x_0`` at timestep ``1000 s``, ``s`` drawn with the scheduler's shift),
the prediction type of SD's scheduler (v-prediction) under its betas (rescaled to zero terminal SNR: the last
timestep is pure noise, as sampling starts). 10% of captions are dropped (empty prompt) so classifier-free guidance
works; Wan's captions are padded to a random length between 32 and 512 tokens, so any ``max_sequence_length`` works.
The denoiser and text encoder weights saved are an exponential moving average.

A run can be split where a single time bound is too short (the Wan VAE is the slow stage): ``--steps 0`` trains
the VAE alone with the whole time bound, ``--vae-steps 0`` the denoiser alone, and ``--init-from DIR`` starts a run
from the weights of an earlier run's folder (VAE, denoiser and text encoder) and continues training them; the latent
statistics are recomputed over the run's own training set either way, and the earlier run's log is kept in the new
one under ``init_log``.

Everything is seeded; ``--max-minutes`` bounds the run: each stage stops early when its share of the time is used
(the learning-rate schedule follows whichever of steps or time runs out first), and the pipeline folder, with
``train_log.json``, is written whatever happens. The run ends by sampling held-out captions and printing the
fraction scored correct.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from tqdm.auto import tqdm

from diffattn.shapes.models import FLOW_SHIFT, GEOMETRY, MODELS, TEXT_LENGTH, build_pipeline, load_trained, sample_kwargs
from diffattn.shapes.world import dataset

__all__ = ["Preset", "PRESETS", "TrainLog", "train", "main"]

_WAN_LENGTHS = (TEXT_LENGTH, 64, 128, 256, 512)
_KL_WEIGHT = 1e-4
_CAPTION_DROPOUT = 0.1
_VAE_SHARE = 0.3  # of the time left after rendering
_EVAL_SHARE = 0.1  # of --max-minutes kept for saving and sampling at the end


@dataclass(frozen=True)
class Preset:
    """Sizes of one training run.

    Args:
        clips: training clips rendered (Wan trains on clips; SD on random frames of them).
        vae_steps: stage-1 steps, ``vae_batch`` clips or frames each, learning rate ``vae_lr``.
        steps: stage-2 (denoiser) steps, ``batch`` samples each, learning rate ``lr`` (AdamW, warm-up then cosine).
        ema: decay of the saved moving average of the denoiser and text encoder.
        log_every: steps between loss records in ``train_log.json``.
        eval_captions: held-out captions sampled at the end (0: no evaluation).
        max_minutes: default time bound of the whole run (``None``: none); stage 1 may use 30% of it.
        check_clips: held-out clips reconstructed by the trained VAE and scored (``vae_check`` in the log).
    """

    clips: int
    vae_steps: int
    vae_batch: int
    vae_lr: float
    steps: int
    batch: int
    lr: float
    ema: float
    log_every: int
    eval_captions: int
    max_minutes: float | None
    check_clips: int = 64


PRESETS: dict[str, Preset] = {
    "gpu": Preset(clips=40_000, vae_steps=3000, vae_batch=64, vae_lr=2e-3, steps=12_000, batch=128, lr=5e-4, ema=0.999,
                  log_every=100, eval_captions=32, max_minutes=4.0),
    "cpu": Preset(clips=2_000, vae_steps=300, vae_batch=8, vae_lr=2e-3, steps=800, batch=16, lr=5e-4, ema=0.99,
                  log_every=20, eval_captions=4, max_minutes=10.0, check_clips=16),
    "smoke": Preset(clips=8, vae_steps=3, vae_batch=2, vae_lr=5e-4, steps=5, batch=2, lr=5e-4, ema=0.9,
                    log_every=1, eval_captions=0, max_minutes=None, check_clips=2),
}
"""``gpu``: one H200 in about 4 minutes per model; ``cpu``: a smaller run of minutes on 2 cores; ``smoke``: seconds,
for tests (the output is not a usable model)."""


class TrainLog:
    """The run's record, rewritten to ``DIR/train_log.json`` at every loss record so an interrupted run keeps it."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "status": "running", "stages": {}}
        self.write()

    def stage(self, name: str, **info: Any) -> dict[str, Any]:
        self.data["stages"][name] = {**info, "loss": []}
        return self.data["stages"][name]

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        os.replace(temporary, self.path)


class _Clock:
    """A stage's steps and deadline (``time.monotonic()`` value, or ``None``): ``progress`` is the larger of the
    fractions of steps done and of time used, in [0, 1]."""

    def __init__(self, steps: int, deadline: float | None) -> None:
        self.steps, self.deadline, self.start = steps, deadline, time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def progress(self, step: int) -> float:
        used = self.elapsed / max(self.deadline - self.start, 1e-3) if self.deadline is not None else 0.0
        return min(1.0, max(step / self.steps, used))

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def _learning_rate(base: float, progress: float, step: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% as ``progress`` goes to 1."""
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _render(args: tuple[int, int, int, int, int, int]) -> tuple[np.ndarray, list[str], list[str]]:
    count, seed, start, frames, height, width = args
    clips = list(dataset(count, seed, frames=frames, height=height, width=width, start=start))
    return np.stack([c.video for c in clips]), [c.scene.caption for c in clips], [c.scene.image_caption for c in clips]


def _render_all(clips: int, seed: int, frames: int, size: int, workers: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Training clips ``[N, F, H, W, 3]`` uint8 and their video and image captions, rendered in parallel chunks."""
    chunk = max(1, math.ceil(clips / max(1, workers * 4)))
    jobs = [(min(chunk, clips - start), seed, start, frames, size, size) for start in range(0, clips, chunk)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render, jobs))
    else:
        parts = [_render(job) for job in jobs]
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]], [c for p in parts for c in p[2]]


class _Data:
    """The rendered training set on the training device, as the model's pixel batches in [-1, 1]."""

    def __init__(self, video: bool, clips: np.ndarray, captions: list[str], device: torch.device) -> None:
        self.video, self.captions, self.device = video, captions, device
        self.clips = torch.from_numpy(clips).to(device)  # uint8 [N, F, H, W, 3]

    def __len__(self) -> int:
        return len(self.clips) if self.video else len(self.clips) * self.clips.shape[1]

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Wan: clips ``[B, 3, F, H, W]``; SD: frames ``[B, 3, H, W]`` (sample ``i`` is frame ``i % F`` of clip ``i // F``)."""
        if self.video:
            batch = self.clips[index].permute(0, 4, 1, 2, 3)
        else:
            frames = self.clips.shape[1]
            batch = self.clips[index // frames, index % frames].permute(0, 3, 1, 2)
        return batch.float() / 127.5 - 1

    def clip_of(self, index: torch.Tensor) -> torch.Tensor:
        """The clip (and caption) index of each sample index."""
        return index if self.video else index // self.clips.shape[1]

    def batches(self, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Endless random index batches (reshuffled each epoch)."""
        while True:
            order = torch.randperm(len(self), generator=generator)
            for begin in range(0, len(order) - size + 1, size):
                yield order[begin : begin + size].to(self.device)


class _CaptionTable:
    """Every training caption, and the empty caption of dropped ones, tokenised once on the device: a step gathers
    token rows by index instead of running the tokenizer on the host (for Wan, padding 128 captions to 512 tokens
    took about 40 ms on a 2-core CPU, against about 100 ms for a whole step on an H100). :meth:`embed` gives what
    the pipeline's ``encode_prompt`` gives. Captions are not passed through Wan's ``prompt_clean``: the world's
    captions are already clean."""

    def __init__(self, pipe: Any, video: bool, captions: list[str], device: torch.device) -> None:
        unique = sorted(set(captions) | {""})
        position = {caption: row for row, caption in enumerate(unique)}
        self.video, self.empty = video, position[""]
        self.of_clip = torch.tensor([position[caption] for caption in captions], device=device)
        length = max(_WAN_LENGTHS) if video else pipe.tokenizer.model_max_length
        tokens = pipe.tokenizer(unique, padding="max_length", max_length=length, truncation=True,
                                return_attention_mask=True, return_tensors="pt")
        self.ids, self.mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)

    def rows(self, clips: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """Token rows of the captions of ``clips``, the empty caption where ``dropped``."""
        return torch.where(dropped, self.empty, self.of_clip[clips])

    def embed(self, text_encoder: torch.nn.Module, rows: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Text states of token ``rows``; Wan's padded to ``length`` tokens with zeros past each caption's end."""
        if not self.video:  # SD's CLIP: all 77 positions, no attention mask
            return text_encoder(self.ids[rows])[0].to(text_encoder.dtype)
        ids, mask = self.ids[rows, :length], self.mask[rows, :length]
        states = text_encoder(ids, mask).last_hidden_state.to(text_encoder.dtype)
        return states * mask[..., None].to(states.dtype)


def _autocast(device: torch.device) -> AbstractContextManager[Any]:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _run_steps(
    name: str, steps: int, deadline: float | None, log: TrainLog, log_every: int, params: list[torch.nn.Parameter],
    lr: float, loss_fn: Callable[[int], dict[str, torch.Tensor]], on_step: Callable[[], None] | None = None,
) -> None:
    """The shared optimisation loop: AdamW, gradient clipping at 1, schedule, loss records, progress bar, time bound.
    ``loss_fn(step)`` returns named losses whose ``"loss"`` entry is optimised."""
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    clock = _Clock(steps, deadline)
    allowed = None if deadline is None else round(deadline - clock.start, 2)
    record = log.stage(name, planned_steps=steps, seconds_allowed=allowed)
    sums: dict[str, torch.Tensor] = {}  # summed on the device: no host sync per step
    bar = tqdm(range(steps), desc=name, dynamic_ncols=True)
    done = 0
    for step in bar:
        if clock.out_of_time():
            break
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(lr, clock.progress(step), step, warmup=max(1, min(200, steps // 10)))
        losses = loss_fn(step)
        optimiser.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        if on_step is not None:
            on_step()
        done = step + 1
        for key, value in losses.items():
            sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
        if done % log_every == 0 or done == steps:
            count = log_every if done % log_every == 0 else done % log_every
            means = {key: float(value) / count for key, value in sums.items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise FloatingPointError(f"{name}: loss is not finite at step {done}: {means}")
            record["loss"].append({"step": done, **means, "seconds": round(clock.elapsed, 2)})
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            sums = {}
            log.write()
    bar.close()
    record.update(steps_done=done, stopped_early=done < steps, seconds=round(clock.elapsed, 2))
    log.write()


def _unclamped_decode(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """The VAE's reconstruction of latents ``z`` before any final clamp to [-1, 1]: ``AutoencoderKLWan`` clamps its
    output, which gives no gradient to a pixel that overshoots, so a pixel pushed past the range stays there (its
    decoder output is gathered with a hook, one call per latent frame). ``AutoencoderKL`` does not clamp."""
    if not isinstance(vae, AutoencoderKLWan):
        return vae.decode(z).sample
    chunks: list[torch.Tensor] = []
    handle = vae.decoder.register_forward_hook(lambda module, args, output: chunks.append(output))
    try:
        vae.decode(z)
    finally:
        handle.remove()
    return torch.cat(chunks, dim=2)


def _train_vae(pipe: Any, data: _Data, preset: Preset, deadline: float | None, log: TrainLog, seed: int) -> None:
    vae = pipe.vae.train().requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    batches = data.batches(preset.vae_batch, generator)
    device_generator = torch.Generator(data.device).manual_seed(seed)

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        pixels = data.pixels(next(batches))
        with _autocast(data.device):
            posterior = vae.encode(pixels).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=device_generator,
                                                              device=data.device, dtype=posterior.mean.dtype)
            reconstruction = _unclamped_decode(vae, z)
        mse = F.mse_loss(reconstruction.float(), pixels)
        kl = 0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1 - posterior.logvar.float()).mean()
        return {"loss": mse + _KL_WEIGHT * kl, "mse": mse, "kl": kl}

    _run_steps("vae", preset.vae_steps, deadline, log, preset.log_every, list(vae.parameters()), preset.vae_lr, loss_fn)


@torch.no_grad()
def _check_vae(pipe: Any, video: bool, geometry: dict[str, int], seed: int, device: torch.device, count: int) -> dict[str, float]:
    """Reconstructions of ``count`` held-out clips through the trained VAE (posterior mean): mean PSNR and the fraction
    the scorer still calls correct, which bounds what the whole model can reach."""
    from diffattn.media.metrics import psnr
    from diffattn.shapes.score import score_video

    clips = list(dataset(count, seed, frames=geometry.get("num_frames", 5), height=geometry["height"],
                         width=geometry["width"], split="heldout"))
    data = _Data(video, np.stack([clip.video for clip in clips]), [], device)
    pixels = data.pixels(torch.arange(len(data), device=device))
    with _autocast(device):
        decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mean).sample.float()
    shape = (count, -1, *pixels.shape[1:])  # SD's frames back into clips
    originals, decoded = (x.add(1).div(2).clamp(0, 1).cpu() for x in (pixels, decoded))
    if video:  # [B, 3, F, H, W] -> [B, F, 3, H, W]
        originals, decoded = originals.transpose(1, 2), decoded.transpose(1, 2)
    else:
        originals, decoded = originals.reshape(shape), decoded.reshape(shape)
    psnrs = [psnr(a, b) for a, b in zip(decoded, originals)]
    correct = [score_video(frames, clip.scene.caption if video else clip.scene.image_caption).correct
               for frames, clip in zip(decoded, clips)]
    return {"clips": count, "psnr": float(np.mean(psnrs)), "accuracy": float(np.mean(correct))}


@torch.no_grad()
def _encode_all(pipe: Any, data: _Data, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every training sample under the frozen VAE (float32, on the device)."""
    means, stds = [], []
    for begin in range(0, len(data), batch):
        index = torch.arange(begin, min(begin + batch, len(data)), device=data.device)
        with _autocast(data.device):
            posterior = pipe.vae.encode(data.pixels(index)).latent_dist
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    return torch.cat(means), torch.cat(stds)


def _normaliser(pipe: Any, video: bool, means: torch.Tensor, stds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent statistics written into the VAE's config; returns (shift, scale) with ``x0 = (z - shift) * scale``."""
    generator = torch.Generator(means.device).manual_seed(0)
    samples = means + stds * torch.randn(means.shape, generator=generator, device=means.device)
    if video:
        channels = samples.transpose(0, 1).reshape(samples.shape[1], -1)
        mean, std = channels.mean(1), channels.std(1).clamp_min(1e-3)
        pipe.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
        return mean.view(1, -1, 1, 1, 1), 1 / std.view(1, -1, 1, 1, 1)
    scale = 1 / float(samples.std().clamp_min(1e-3))
    pipe.vae.register_to_config(scaling_factor=scale)
    return torch.zeros((), device=means.device), torch.full((), scale, device=means.device)


def _flow_noised(x0: torch.Tensor, noise: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Wan's flow-matching training pair for uniform draws ``u`` in [0, 1]: the shifted noise level ``s`` gives the
    input ``(1 - s) x0 + s e``, the timestep ``1000 s`` and the target ``e - x0`` (the velocity the Euler sampler
    integrates from ``s = 1``, pure noise)."""
    sigma = FLOW_SHIFT * u / (1 + (FLOW_SHIFT - 1) * u)
    s = sigma.view(-1, *(1,) * (x0.ndim - 1))
    return (1 - s) * x0 + s * noise, sigma * 1000, noise - x0


def _ddpm_noised(alphas: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                 prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """SD's training pair at timesteps ``t`` under the cumulative ``alphas``: the input ``sqrt(a) x0 + sqrt(1 - a) e``
    and the target of ``prediction_type`` (``"epsilon"``: ``e``; ``"v_prediction"``: ``sqrt(a) e - sqrt(1 - a) x0``)."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"unsupported prediction type {prediction_type!r}")
    a = alphas[t].view(-1, *(1,) * (x0.ndim - 1))
    target = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, target


def _train_denoiser(pipe: Any, data: _Data, preset: Preset, deadline: float | None, log: TrainLog, seed: int,
                    ema: list[torch.Tensor], trained: list[torch.nn.Parameter]) -> None:
    video = data.video
    denoiser = pipe.transformer if video else pipe.unet
    means, stds = _encode_all(pipe, data)
    shift, scale = _normaliser(pipe, video, means, stds)
    log.data["latents"] = {"shape": list(means.shape[1:]), "shift": shift.flatten().tolist(), "scale": scale.flatten().tolist()}
    generator = torch.Generator().manual_seed(seed + 1)
    device_generator = torch.Generator(data.device).manual_seed(seed + 1)
    batches = data.batches(preset.batch, generator)
    table = _CaptionTable(pipe, video, data.captions, data.device)
    if not video:
        from diffusers import DDPMScheduler

        alphas = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod.to(data.device)
        prediction_type = pipe.scheduler.config.prediction_type

    def noise_like(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=device_generator, device=x.device)

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        index = next(batches)
        dropped = torch.rand(len(index), generator=generator) < _CAPTION_DROPOUT
        rows = table.rows(data.clip_of(index), dropped.to(data.device))
        x0 = ((means[index] + stds[index] * noise_like(means[index])) - shift) * scale
        noise = noise_like(x0)
        with _autocast(data.device):
            if video:
                length = _WAN_LENGTHS[int(torch.randint(len(_WAN_LENGTHS), (1,), generator=generator))]
                text = table.embed(pipe.text_encoder, rows, length)
                noised, timestep, target = _flow_noised(x0, noise, torch.rand(len(index), generator=generator).to(data.device))
                prediction = denoiser(hidden_states=noised, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]
            else:
                text = table.embed(pipe.text_encoder, rows)
                t = torch.randint(len(alphas), (len(index),), generator=generator).to(data.device)
                noised, target = _ddpm_noised(alphas, x0, noise, t, prediction_type)
                prediction = denoiser(noised, t, encoder_hidden_states=text, return_dict=False)[0]
        return {"loss": F.mse_loss(prediction.float(), target)}

    step_count = [0]

    def update_ema() -> None:
        step_count[0] += 1
        decay = min(preset.ema, (1 + step_count[0]) / (10 + step_count[0]))
        torch._foreach_lerp_(ema, [p.detach() for p in trained], 1 - decay)

    _run_steps("denoiser", preset.steps, deadline, log, preset.log_every, trained, preset.lr, loss_fn, update_ema)


def _cast(pipe: Any, dtype: torch.dtype) -> None:
    """Cast the VAE and denoiser to ``dtype`` without diffusers' "modules that should be kept in float32" notice: the
    float16 copy is for storage only, and the float32 one is what the pipeline loads by default."""
    notices = logging.getLogger("diffusers.models.modeling_utils")
    level = notices.level
    notices.setLevel(logging.ERROR)
    try:
        for module in (pipe.vae, pipe.transformer if hasattr(pipe, "transformer") else pipe.unet):
            module.to(dtype)
    finally:
        notices.setLevel(level)


def _save(pipe: Any, out: Path) -> int:
    """Save the pipeline as safetensors, the VAE and denoiser in float16 (diffusers loads them as float32 unless told
    otherwise; the text encoder stays float32, which transformers would otherwise keep as stored). Returns the size in
    bytes of the weight files."""
    pipe.to("cpu")
    _cast(pipe, torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    return sum(p.stat().st_size for p in out.rglob("*.safetensors"))


def _evaluate(pipe: Any, name: str, count: int, seed: int, device: torch.device, out: Path) -> dict[str, Any]:
    """Accuracy on ``count`` single-object held-out captions, in float32 on ``device``; the samples go to
    ``out/samples.png`` (not part of the package data)."""
    from diffattn.shapes.evaluate import accuracy, heldout_captions, save_grid

    _cast(pipe, torch.float32)
    pipe.to(device)
    captions = heldout_captions(count, seed, image=name == "shapes-sd")
    result = accuracy(pipe, captions, [seed + i for i in range(count)], **sample_kwargs(name))
    save_grid(result.samples, out / "samples.png")
    return result.to_dict()


def train(name: str, out: str | Path, preset: Preset, *, seed: int = 0, device: str | torch.device | None = None,
          workers: int | None = None, init_from: str | Path | None = None) -> dict[str, Any]:
    """Train model ``name`` under ``preset`` and write its pipeline folder and ``train_log.json`` to ``out``.

    ``init_from``: an earlier run's pipeline folder whose weights the run starts from instead of a fresh draw. With
    ``preset.steps`` 0 the run trains the VAE alone, with ``preset.vae_steps`` 0 the denoiser alone (keeping the
    VAE as it is), each with the whole time bound.

    The folder is written even when a stage fails or the time bound ends it early (the log's ``status`` says which);
    a failure is re-raised after saving. Returns the log's contents.
    """
    if name not in MODELS:
        raise ValueError(f"unknown shapes model {name!r}; choose one of {', '.join(MODELS)}")
    out = Path(out)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    workers = workers or min(16, os.cpu_count() or 1)
    video = name == "shapes-wan"
    log = TrainLog(out / "train_log.json", {
        "model": name, "seed": seed, "device": str(device), "preset": asdict(preset),
        "versions": {"torch": torch.__version__, **_library_versions()},
        **({"init_from": str(init_from), "init_log": _earlier_log(Path(init_from))} if init_from is not None else {}),
    })
    budget = None if preset.max_minutes is None else 60 * preset.max_minutes
    started = time.monotonic()
    geometry = GEOMETRY[name]
    # rendered before the model touches the device: the worker processes fork from a process without CUDA state
    clips, video_captions, image_captions = _render_all(preset.clips, seed, geometry.get("num_frames", 5),
                                                        geometry["height"], workers)
    torch.manual_seed(seed)
    pipe = (build_pipeline(name, seed=seed) if init_from is None else load_trained(name, folder=init_from)).to(device)
    pipe.set_progress_bar_config(disable=True)
    denoiser = pipe.transformer if video else pipe.unet
    trained = [p for module in (denoiser, pipe.text_encoder) for p in module.parameters()]
    ema = [p.detach().clone() for p in trained]
    failure: BaseException | None = None
    try:
        data = _Data(video, clips, video_captions if video else image_captions, device)
        log.data["data"] = {"clips": len(clips), "samples": len(data), "render_seconds": round(time.monotonic() - started, 2)}
        now = time.monotonic()
        if preset.vae_steps:
            share = 1 - _EVAL_SHARE if preset.steps == 0 else _VAE_SHARE
            _train_vae(pipe, data, preset, None if budget is None else now + share * (started + budget - now), log, seed)
        pipe.vae.eval().requires_grad_(False)
        log.data["vae_check"] = _check_vae(pipe, video, geometry, seed + 20_000, device, preset.check_clips)
        log.write()
        for module in (denoiser, pipe.text_encoder):
            module.train().requires_grad_(True)
        deadline = None if budget is None else started + (1 - _EVAL_SHARE) * budget
        _train_denoiser(pipe, data, preset, deadline, log, seed, ema, trained)
        log.data["status"] = "trained"
    except (Exception, KeyboardInterrupt) as exc:  # save what there is, then re-raise
        failure = exc
        log.data["status"] = f"failed: {type(exc).__name__}: {exc}"
        log.data["traceback"] = traceback.format_exc()
    with torch.no_grad():
        for p, average in zip(trained, ema):
            p.copy_(average)
    for module in (denoiser, pipe.text_encoder):
        module.eval().requires_grad_(False)
    log.data["size_bytes"] = _save(pipe, out)
    log.data["seconds"] = round(time.monotonic() - started, 2)
    log.write()
    if failure is not None:
        raise failure
    if preset.eval_captions and preset.steps:
        log.data["eval"] = _evaluate(pipe, name, preset.eval_captions, seed + 10_000, device, out)
        log.data["seconds"] = round(time.monotonic() - started, 2)
        log.write()
    return log.data


def _earlier_log(folder: Path) -> dict[str, Any] | None:
    """The ``train_log.json`` of the run that wrote ``folder`` (``None`` if it has none)."""
    path = folder / "train_log.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m diffattn.shapes.train", description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--out", required=True, help="the pipeline folder to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    parser.add_argument("--steps", type=int, default=None, help="denoiser steps (default: the preset's)")
    parser.add_argument("--vae-steps", type=int, default=None, help="VAE steps (default: the preset's)")
    parser.add_argument("--batch", type=int, default=None, help="denoiser batch (default: the preset's)")
    parser.add_argument("--vae-batch", type=int, default=None,
                        help="VAE batch (default: the preset's; the Wan VAE's steps cost the same up to 128 clips on an H100)")
    parser.add_argument("--lr", type=float, default=None, help="denoiser learning rate (default: the preset's)")
    parser.add_argument("--vae-lr", type=float, default=None,
                        help="VAE learning rate (default: the preset's; lower to continue an --init-from VAE gently)")
    parser.add_argument("--init-from", default=None,
                        help="start from the weights of this earlier run's folder (with --vae-steps 0: keep its VAE as it is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None, help="time bound of the run (default: the preset's)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a job runner's stop still saves the folder and the log
    preset = PRESETS[args.preset]
    changes = {key: getattr(args, key) for key in ("steps", "vae_steps", "batch", "vae_batch", "lr", "vae_lr", "max_minutes")
               if getattr(args, key) is not None}
    result = train(args.model, args.out, replace(preset, **changes), seed=args.seed, device=args.device,
                   init_from=args.init_from)
    stages = {name: f"{stage['steps_done']}/{stage['planned_steps']} steps, last loss "
                    f"{stage['loss'][-1]['loss'] if stage['loss'] else float('nan'):.4f}" for name, stage in result["stages"].items()}
    print(f"{args.model}: {result['status']} in {result['seconds']:.0f} s; " + "; ".join(f"{k}: {v}" for k, v in stages.items()))
    if "vae_check" in result:
        check = result["vae_check"]
        print(f"VAE reconstructions of held-out clips: {check['psnr']:.1f} dB, {check['accuracy']:.0%} scored correct")
    print(f"weights: {result['size_bytes'] / 2**20:.2f} MiB of safetensors in {args.out}")
    if "eval" in result:
        print(f"held-out accuracy (shape and colour): {result['eval']['accuracy']:.1%} of {len(result['eval']['samples'])} captions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

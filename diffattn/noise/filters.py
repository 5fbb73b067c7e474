"""FreeInit's 3-D low-pass filters and frequency mixing, vectorised.

A filter is a `[frames, height, width]` mask over the *fftshifted* spectrum of a video latent (DC in the middle),
with values in [0, 1]. `frequency_mix` keeps the low frequencies of one latent and the high frequencies of
another: `Re IFFT(FFT(low)·LPF + FFT(high)·(1 − LPF))` over the last three axes.

Distances follow FreeInit's code: `d² = ((d_s/d_t)·f_t)² + f_h² + f_w²` with each `f` the normalised frequency in
[-1, 1) (`2·i/n − 1` for the original's even sizes). Two deliberate differences from the original loops, both
documented where they act: frequencies are measured from the shifted DC bin `n // 2` (identical for even sizes,
exactly centred for odd ones such as Wan's 21 latent frames), and the box filter always keeps the DC bin.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["FILTER_KINDS", "check_filter_settings", "low_pass_filter", "frequency_mix"]

FILTER_KINDS: tuple[str, ...] = ("butterworth", "gaussian", "ideal", "box")


def check_filter_settings(kind: str, spatial_stop: float, temporal_stop: float) -> None:
    """Raise `ConfigError` for an unknown filter kind or a stop frequency outside (0, 1]."""
    if kind not in FILTER_KINDS:
        raise ConfigError(f"unknown FreeInit filter {kind!r}; choose one of {', '.join(FILTER_KINDS)}")
    for name, value in (("spatial_stop", spatial_stop), ("temporal_stop", temporal_stop)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(
                f"{name} must lie in (0, 1]; got {value!r} (a zero cut-off passes no low frequency, so nothing of "
                "the previous sample would be kept and FreeInit would only resample the noise)"
            )


def _centred_frequencies(n: int, device: torch.device | str) -> torch.Tensor:
    """Normalised frequency of each fftshifted bin: `2·(i − n//2)/n` (0 at DC; `2i/n − 1` when n is even)."""
    return 2.0 * (torch.arange(n, device=device, dtype=torch.float64) - n // 2) / n


def _squared_distance(size: tuple[int, int, int], spatial: float, temporal: float, device) -> torch.Tensor:
    """FreeInit's `d²` over a `[T, H, W]` grid, the temporal axis scaled by `d_s / d_t`."""
    frames, height, width = size
    ft = (spatial / temporal) * _centred_frequencies(frames, device)
    fh = _centred_frequencies(height, device)
    fw = _centred_frequencies(width, device)
    return ft[:, None, None] ** 2 + fh[None, :, None] ** 2 + fw[None, None, :] ** 2


def _box(size: tuple[int, int, int], spatial: float, temporal: float, device) -> torch.Tensor:
    """The original's cube around DC: half-widths `round(H//2·d_s)` (rows and columns) and `round(T//2·d_t)`.

    The original's half-open ranges `[c − r, c + r)` are kept; a half-width of 0 (tiny sizes) would empty the
    cube and keep nothing, so it is raised to 1, which keeps the DC bin.
    """
    frames, height, width = size
    radius_s = max(1, round(int(height // 2) * spatial))
    radius_t = max(1, round(frames // 2 * temporal))
    mask = torch.zeros(size, dtype=torch.float64, device=device)
    ct, ch, cw = frames // 2, height // 2, width // 2
    mask[max(0, ct - radius_t):ct + radius_t, max(0, ch - radius_s):ch + radius_s, max(0, cw - radius_s):cw + radius_s] = 1.0
    return mask


def low_pass_filter(
    size: tuple[int, int, int],
    kind: str = "butterworth",
    spatial_stop: float = 0.25,
    temporal_stop: float = 0.25,
    order: int = 4,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FreeInit's low-pass mask `[T, H, W]` for fftshifted spectra, values in [0, 1].

    Args:
        size (`tuple[int, int, int]`): latent frames, height and width.
        kind (`str`, defaults to `"butterworth"`): `butterworth` `1/(1 + (d²/d_s²)^n)`, `gaussian`
            `exp(−d²/(2d_s²))`, `ideal` `1[d² ≤ 2·d_s]` (the threshold of both FreeInit implementations, kept as
            is) or `box` (the original's cube).
        spatial_stop / temporal_stop (`float`): normalised stop frequencies `d_s`, `d_t` in (0, 1].
        order (`int`): Butterworth order `n`.

    Raises:
        ConfigError: an unknown kind, a size below 1, or a stop frequency outside (0, 1] (a zero cut-off keeps no
            low frequency at all, so FreeInit would just resample the noise).
    """
    check_filter_settings(kind, spatial_stop, temporal_stop)
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"filter size must be three positive extents (frames, height, width); got {size!r}")
    size = tuple(int(s) for s in size)
    if kind == "box":
        return _box(size, spatial_stop, temporal_stop, device).to(dtype)
    d2 = _squared_distance(size, spatial_stop, temporal_stop, device)
    if kind == "butterworth":
        mask = 1.0 / (1.0 + (d2 / spatial_stop**2) ** order)
    elif kind == "gaussian":
        mask = torch.exp(-d2 / (2.0 * spatial_stop**2))
    else:
        mask = (d2 <= spatial_stop * 2).to(torch.float64)
    return mask.to(dtype)


def frequency_mix(low_source: torch.Tensor, high_source: torch.Tensor, low_pass: torch.Tensor) -> torch.Tensor:
    """Low frequencies of `low_source`, high ones of `high_source`, over the last three axes (`[..., T, H, W]`).

    Computed in float32 (FFTs do not take half precision everywhere); returns float32.
    """
    dims = (-3, -2, -1)
    low_pass = low_pass.to(device=low_source.device, dtype=torch.float32)
    low = torch.fft.fftshift(torch.fft.fftn(low_source.float(), dim=dims), dim=dims)
    high = torch.fft.fftshift(torch.fft.fftn(high_source.float(), dim=dims), dim=dims)
    mixed = low * low_pass + high * (1.0 - low_pass)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=dims), dim=dims).real

"""Parameterisations: what the render loop optimises, and how it becomes an image batch [B,3,H,W] in [0,1].

A parameterisation is a `Param`: the leaf tensors to optimise, `image_fn()` building the images from them, and
`project()`, which the loop calls after every optimiser step (a no-op except for clamped pixels). It unpacks like the
Lucid pair: `params, image_fn = pixel(4, 64)`. Spatial part and colour part compose:

- spatial  `pixel`    raw values per pixel
           `fourier`  real/imag parts of the rfft2 spectrum, scaled by 1 / max(f, 1/size)^decay (f in cycles per
                      pixel), irfft2 back to pixels: low frequencies get the large steps, so images are smoother
- colour   `to_rgb`   optional decorrelation (channels mixed by the square root of ImageNet's colour correlation,
                      Lucid's constant, normalised by its largest column norm), then sigmoid into [0,1] -- or clamp
           `greyscale` wraps any Param: its images' channel mean in all three channels

Randomness comes only from the `generator` passed in; tensors are made on `device` (no global device). The render
loop also accepts a factory `f(generator=..., device=...) -> Param` (e.g. `functools.partial(fourier, 4, 64)`) and
then seeds it itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

# Square root of ImageNet's RGB colour correlation matrix (Lucid's `color_correlation_svd_sqrt`).
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
FOURIER_SCALE = 4.0  # Lucid divides the irfft2 output by 4 so that sigmoid starts near its linear range
SQUASHES = ("sigmoid", "clamp")
PARAMS = ("pixel", "fourier")  # the parameterisations the image-optimisation methods choose from by name


def _noop() -> None:
    pass


@dataclass
class Param:
    params: list[torch.Tensor]  # leaf tensors with requires_grad, what the optimiser updates
    image_fn: Callable[[], torch.Tensor]  # -> [B, 3, H, W] in [0, 1]
    project: Callable[[], None] = _noop  # called after each optimiser step (keeps clamped pixels in [0, 1])
    description: str = field(default="param")

    def __iter__(self):  # `params, image_fn = pixel(...)`
        return iter((self.params, self.image_fn))

    def __call__(self) -> torch.Tensor:
        return self.image_fn()


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """Mix the channels of [B,3,H,W] by the normalised colour correlation square root."""
    m = COLOR_CORRELATION_SQRT.to(t.device, t.dtype)
    m = m / torch.linalg.vector_norm(m, dim=0).max()
    return (m @ t.reshape(*t.shape[:2], -1)).view(t.shape)  # out[b, i] = sum_j m[i, j] t[b, j]


def to_rgb(t: torch.Tensor, decorrelate: bool = False, squash: str = "sigmoid") -> torch.Tensor:
    if decorrelate:
        t = decorrelate_colors(t)
    return torch.sigmoid(t) if squash == "sigmoid" else t.clamp(0, 1)


def _size(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return int(h), int(w)


def pixel(batch: int, size, init="random", std: float = 0.01, squash: str = "sigmoid",
          generator: torch.Generator | None = None, device="cpu") -> Param:
    """Raw pixels. init: "random" (0.5 + std * noise), "grey" (0.5) or a tensor [B,3,H,W] (or [3,H,W]) in [0,1].
    squash="sigmoid" optimises logits; squash="clamp" optimises the values themselves, projected into [0,1]."""
    if squash not in SQUASHES:
        raise ValueError(f"unknown squash {squash!r}; valid: {list(SQUASHES)}")
    h, w = _size(size)
    device = torch.device(device)
    shape = (batch, 3, h, w)
    if isinstance(init, torch.Tensor):
        start = init.detach().to(device, torch.float32).expand(shape).clone()
    elif init == "grey":
        start = torch.full(shape, 0.5, device=device)
    elif init == "random":
        start = 0.5 + std * torch.randn(shape, generator=generator, device=device)
    else:
        raise ValueError(f"unknown pixel init {init!r}; valid: 'random', 'grey' or a tensor")
    start = start.clamp(0, 1)
    if squash == "sigmoid":
        raw = torch.logit(start, eps=1e-4).requires_grad_(True)
        return Param([raw], lambda: torch.sigmoid(raw), description=f"pixel({batch}, {(h, w)}, sigmoid)")
    raw = start.requires_grad_(True)

    def project():
        with torch.no_grad():
            raw.clamp_(0, 1)

    return Param([raw], lambda: raw, project, description=f"pixel({batch}, {(h, w)}, clamp)")


def rfft2_frequencies(h: int, w: int, device="cpu") -> torch.Tensor:
    """|f| in cycles per pixel for every entry of an rfft2 spectrum of an h x w image: [h, w // 2 + 1]."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def fourier(batch: int, size, decay: float = 1.0, std: float = 0.01, decorrelate: bool = True,
            generator: torch.Generator | None = None, device="cpu") -> Param:
    """Fourier spectrum parameters [B,3,h,w//2+1,2] (real, imag), scaled by 1/max(f, 1/max(h,w))^decay."""
    h, w = _size(size)
    device = torch.device(device)
    freqs = rfft2_frequencies(h, w, device)
    scale = (1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay)[..., None]  # [h, w//2+1, 1]
    spectrum = (std * torch.randn((batch, 3, *freqs.shape, 2), generator=generator, device=device))
    spectrum.requires_grad_(True)
    # irfft2(.., norm="ortho") / FOURIER_SCALE as one multiplication of the spectrum (no pass over the image);
    # written out for real and imaginary parts: broadcasting over the last axis of 2 is ~5x slower
    scale = (scale / (FOURIER_SCALE * (h * w) ** 0.5)).expand(*freqs.shape, 2).contiguous()

    def image_fn():
        scaled = torch.view_as_complex((scale * spectrum).contiguous())
        t = torch.fft.irfft2(scaled, s=(h, w), norm="forward")
        return to_rgb(t, decorrelate=decorrelate, squash="sigmoid")

    return Param([spectrum], image_fn,
                 description=f"fourier({batch}, {(h, w)}, decay={decay:g}, decorrelate={decorrelate})")


def greyscale(param: Param) -> Param:
    """`param`'s images as grey (the mean of their channels in each of R, G and B): for a model of greyscale data,
    whose visualisations should not be coloured noise it never saw."""
    return Param(param.params, lambda: param.image_fn().mean(dim=1, keepdim=True).expand(-1, 3, -1, -1),
                 param.project, description=f"greyscale({param.description})")


def as_param(param, generator: torch.Generator, device) -> Param:
    """A `Param`, a (params, image_fn) pair, or a factory called as `factory(generator=..., device=...)`."""
    if isinstance(param, Param):
        return param
    if isinstance(param, tuple) and len(param) == 2:
        return Param(list(param[0]), param[1])
    if callable(param):
        built = param(generator=generator, device=device)
        if isinstance(built, (Param, tuple)):
            return as_param(built, generator, device)
    raise TypeError(f"param must be a Param, a (params, image_fn) pair or a factory, got {type(param).__name__}")

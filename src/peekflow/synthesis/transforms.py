"""Per-step random transforms: factories returning `t(images, generator) -> images` of the same [B,C,H,W] size.

Each factory builds a fresh `Transform` from its own arguments; nothing is cached at module level, so two calls with
other settings never share state. All randomness is drawn from the generator passed in (one draw per image, so every
image of a batch gets its own jitter/flip/angle/scale), and every transform is differentiable in the images.

- jitter(d)            translate by an integer (dy, dx) in [-d, d]^2, by `torch.roll` (wraps around: seamless for the
                       periodic Fourier parameterisation)
- flip(p)              horizontal mirror with probability p
- rotate(degrees)      angle drawn from a list, or uniform in [-max, max] for a number; bilinear, reflected borders
- scale(factors)       zoom about the centre by a factor drawn from the list (> 1 enlarges); bilinear, reflected borders
- colour_shift(m, s)   per image and colour channel x * exp(u) + v, u ~ U(-s, s), v ~ U(-m, m) (Plug-In Inversion's
                       colour shift, Ghiasi et al. 2022: the image may not rely on one exact palette)
- pad(n, mode, value)  pad n px each side ("reflect" or "constant" value), then resize back to H x W (the content
                       shrinks by H / (H + 2n) and the border shows the padding)
- compose(list)        apply in order; `standard(size)` returns Lucid's default list scaled to the image size:
                       `compose(standard(64)[:-1] + [flip()])` is how a user edits it

jitter and flip only move pixels: each draws a per-image permutation of pixel positions (`pixel_map`), and compose
joins consecutive ones into a single permutation, applied by one gather whose backward is the gather by the inverse
permutation (exact, like the rolls and flips it replaces, at a fraction of their cost in a render step).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


class Transform:
    """`fn(images, generator) -> images`. A transform that only moves pixels also has `pixel_map(shape, generator)
    -> [B, H*W]` (None for the identity): output pixel j of image b is input pixel map[b, j], a permutation."""

    def __init__(self, fn: Callable, description: str, pixel_map: Callable | None = None):
        self.fn, self.description, self.pixel_map = fn, description, pixel_map

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.fn(images, generator)

    def __repr__(self) -> str:
        return self.description


class _Permute(torch.autograd.Function):
    """images [B,C,H,W] with each image's pixels reordered by its permutation index [B, H*W]."""

    @staticmethod
    def forward(ctx, images, index):
        ctx.save_for_backward(index)
        return _gather_pixels(images, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        inverse = torch.empty_like(index).scatter_(1, index, torch.arange(index.shape[1], device=index.device)
                                                   .expand_as(index))
        return _gather_pixels(grad, inverse), None


def _gather_pixels(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w)
    return flat.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def _permute(images: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return images if index is None else _Permute.apply(images, index.to(images.device))


def _permuting(pixel_map: Callable, description: str) -> Transform:
    return Transform(lambda images, generator: _permute(images, pixel_map(images.shape, generator)), description,
                     pixel_map)


def _positions(rows: torch.Tensor, cols: torch.Tensor, w: int) -> torch.Tensor:
    """Per image, source rows [B, H] x source columns [B, W] -> flat source positions [B, H*W]."""
    return (rows[:, :, None] * w + cols[:, None, :]).flatten(1)


def _choice(values: Sequence[float], n: int, generator: torch.Generator, device) -> torch.Tensor:
    values = torch.as_tensor(list(values), dtype=torch.float32)
    idx = torch.randint(len(values), (n,), generator=generator, device=generator.device).cpu()
    return values[idx].to(device)


def jitter(d: int) -> Transform:
    d = int(d)
    if d < 0:
        raise ValueError(f"jitter needs d >= 0, got {d}")

    def pixel_map(shape, generator):
        if d == 0:
            return None
        b, _, h, w = shape
        dev = generator.device
        shifts = torch.randint(-d, d + 1, (2, b), generator=generator, device=dev)
        rows = (torch.arange(h, device=dev)[None, :] - shifts[0][:, None]) % h  # a roll by (dy, dx), wrapping
        cols = (torch.arange(w, device=dev)[None, :] - shifts[1][:, None]) % w
        return _positions(rows, cols, w)

    return _permuting(pixel_map, f"jitter({d})")


def flip(p: float = 0.5) -> Transform:
    if not 0 <= p <= 1:
        raise ValueError(f"flip needs 0 <= p <= 1, got {p}")

    def pixel_map(shape, generator):
        b, _, h, w = shape
        dev = generator.device
        draw = torch.rand(b, generator=generator, device=dev)
        cols = torch.arange(w, device=dev).expand(b, w)
        cols = torch.where((draw < p)[:, None], w - 1 - cols, cols)
        return _positions(torch.arange(h, device=dev).expand(b, h), cols, w)

    return _permuting(pixel_map, f"flip({p:g})")


def _affine(images: torch.Tensor, angles_deg: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle and zoom it by its factor about the centre (pixel-space, any aspect ratio)."""
    b, _, h, w = images.shape
    a = angles_deg.to(images.device, images.dtype) * (math.pi / 180)
    s = factors.to(images.device, images.dtype)
    cos, sin, zero = torch.cos(a) / s, torch.sin(a) / s, torch.zeros_like(a)
    # output -> input sampling coordinates, in affine_grid's normalised [-1, 1] units per axis
    theta = torch.stack([torch.stack([cos, -sin * (h / w), zero], 1),
                         torch.stack([sin * (w / h), cos, zero], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rotate(degrees) -> Transform:
    """degrees: a list of angles to choose from, or a number m for a uniform angle in [-m, m]."""
    if isinstance(degrees, (int, float)):
        m = float(degrees)

        def draw(n, generator, device):
            u = torch.rand(n, generator=generator, device=generator.device).to(device)
            return (2 * u - 1) * m
        desc = f"rotate({m:g})"
    else:
        angles = [float(x) for x in degrees]
        if not angles:
            raise ValueError("rotate needs at least one angle")

        def draw(n, generator, device):
            return _choice(angles, n, generator, device)
        desc = f"rotate({angles})"

    def fn(images, generator):
        n = images.shape[0]
        return _affine(images, draw(n, generator, images.device), torch.ones(n, device=images.device))

    return Transform(fn, desc)


def scale(factors: Sequence[float]) -> Transform:
    factors = [float(x) for x in factors]
    if not factors or min(factors) <= 0:
        raise ValueError(f"scale needs a non-empty list of positive factors, got {factors}")

    def fn(images, generator):
        n = images.shape[0]
        return _affine(images, torch.zeros(n, device=images.device), _choice(factors, n, generator, images.device))

    return Transform(fn, f"scale({factors})")


def colour_shift(shift: float, log_scale: float) -> Transform:
    shift, log_scale = float(shift), float(log_scale)
    if shift < 0 or log_scale < 0:
        raise ValueError(f"colour_shift needs shift >= 0 and log_scale >= 0, got {shift}, {log_scale}")

    def fn(images, generator):
        n, c = images.shape[:2]
        u = torch.rand((2, n, c, 1, 1), generator=generator, device=images.device) * 2 - 1
        return images * torch.exp(log_scale * u[0]) + shift * u[1]

    return Transform(fn, f"colour_shift({shift:g}, {log_scale:g})")


def pad(n: int, mode: str = "reflect", value: float = 0.5) -> Transform:
    if mode not in ("reflect", "constant"):
        raise ValueError(f"unknown pad mode {mode!r}; valid: ['reflect', 'constant']")
    n = int(n)

    def fn(images, generator):
        if n == 0:
            return images
        h, w = images.shape[-2:]
        kw = {"value": value} if mode == "constant" else {}
        padded = F.pad(images, (n, n, n, n), mode=mode, **kw)
        return F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False, antialias=True)

    return Transform(fn, f"pad({n}, {mode})" if mode == "reflect" else f"pad({n}, constant={value:g})")


def compose(transforms: Sequence[Callable]) -> Transform:
    transforms = list(transforms)

    def fn(images, generator):
        index = None  # the permutation of the pixel-moving transforms met since the last other one
        for t in transforms:
            pixel_map = getattr(t, "pixel_map", None)
            if pixel_map is None:
                images, index = t(_permute(images, index), generator), None
                continue
            step = pixel_map(images.shape, generator)
            if step is not None:  # t after the earlier ones: output j <- earlier output step[j] <- input index[step[j]]
                index = step if index is None else index.gather(1, step)
        return _permute(images, index)

    names = ", ".join(getattr(t, "description", getattr(t, "__name__", repr(t))) for t in transforms)
    return Transform(fn, f"compose([{names}])")


def standard(size: int) -> list[Transform]:
    """Lucid's default (pad 12, jitter 8, scale 0.9..1.1, rotate -10..10 with extra weight on 0, jitter 4) for
    224 px, with pixel amounts scaled to `size`. A plain list: copy it, edit it, pass it (or compose(it))."""
    k = size / 224
    return [
        pad(max(1, round(12 * k)), mode="constant", value=0.5),
        jitter(max(1, round(8 * k))),
        scale([1 + (i - 5) / 50 for i in range(11)]),
        rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(max(1, round(4 * k))),
    ]


def as_transform(transforms) -> Transform:
    """None -> identity; a list -> compose(list); a callable -> itself."""
    if transforms is None:
        return Transform(lambda images, generator: images, "none")
    if isinstance(transforms, (list, tuple)):
        return compose(transforms)
    if callable(transforms):
        return transforms if isinstance(transforms, Transform) else Transform(transforms, getattr(
            transforms, "__name__", repr(transforms)))
    raise TypeError(f"transforms must be None, a list or a callable, got {type(transforms).__name__}")

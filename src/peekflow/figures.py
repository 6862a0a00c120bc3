"""Image grids for prototypes, patches and feature visualisations: one PNG, optionally labelled per cell; matplotlib
figures saved atomically, with titles wrapped to their width (a long title must not be clipped)."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw

from peekflow.io import atomic_path


def image_grid(images: np.ndarray, ncol: int | None = None, labels: list[str] | None = None, scale: int = 2,
               pad: int = 2, label_height: int = 12) -> Image.Image:
    """images [N,3,H,W] (or [N,H,W,3]) in [0,1] -> a grid image with `ncol` columns and a caption under each cell."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [N,3,H,W] or [N,H,W,3], got shape {images.shape}")
    if images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"image_grid: {len(labels)} labels for {len(images)} images")
    n, h, w, _ = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    cell_h = h * scale + (label_height if labels else 0)
    grid = Image.new("RGB", (ncol * (w * scale + pad) + pad, nrow * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        x, y = pad + c * (w * scale + pad), pad + r * (cell_h + pad)
        tile = Image.fromarray(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
        grid.paste(tile.resize((w * scale, h * scale), Image.NEAREST), (x, y))
        if labels:
            draw.text((x + 1, y + h * scale), str(labels[i])[: max(1, w * scale // 6)], fill="black")
    return grid


def save_grid(path, images, **kwargs) -> None:
    with atomic_path(path) as tmp:
        image_grid(images, **kwargs).save(tmp, format="PNG")


def save_figure(fig, path, dpi: int = 120) -> None:
    """A matplotlib Figure as PNG, written atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def wrap_title(text: str, width_inches: float, fontsize: float = 10.0) -> str:
    """`text` broken at spaces into lines that fit `width_inches` at `fontsize` points (a character of the default
    sans-serif font is at most ~0.6 em wide on average), its own line breaks kept."""
    per_line = max(16, int(width_inches * 72 / (0.6 * fontsize)))
    return "\n".join("\n".join(textwrap.wrap(line, per_line)) or line for line in text.split("\n"))

"""The neuron atlas's image files, each written once and referenced from every page that shows it.

<out>/images/<digest>.png           a top-N image as the model sees it (resize/crop, no normalisation), at its own
                                   size, shared by every neuron and layer that ranks it: the pages frame the patch
                                   boxes over it and crop the patches out of it with CSS, so no copy per neuron;
                                   <digest>: of its path and the preprocessing
<out>/<layer>/img/thumb_<c>.png     the neuron's best patch (`thumb` px; a token layer's: the token framed in its
                                   context): the layer grid, the home page and the neighbours' links show this file
<out>/<layer>/img/vital_<c>.png     plain | VITAL visualisation, one strip
<out>/<layer>/img/sams_<c>.png      DORA's s-AMS of the neuron, one strip

A strip's cells (and a patch as shown) are `cell_side` px: small patches enlarged by a whole factor to at least
MIN_CELL, large ones shrunk to at most MAX_CELL, so a 224 px ImageNet patch is shown at 96 px.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from peekflow.data.folder import Preprocessing
from peekflow.neurons.patch_files import patch_view

MIN_CELL, MAX_CELL = 64, 96
GAP = 4  # px between the cells of a strip


def cell_side(native: int) -> int:
    """The side of a strip cell for images of `native` px (module doc)."""
    return min(MAX_CELL, native * -(-MIN_CELL // native))


def save_png(array: np.ndarray, path: Path) -> None:
    """[3,h,w] uint8 -> PNG."""
    Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0))).save(path, optimize=True)


def save_strip(images, path: Path, side: int, marks=None) -> tuple[int, int]:
    """[n,3,h,w] uint8 -> one PNG of n cells (longer side `side`, GAP px apart, white between), each with its mark
    framed (patch_view); returns (width, height) of one cell."""
    views = [patch_view(img, side, None if marks is None else marks[j]) for j, img in enumerate(images)]
    h, w = views[0].shape[1:]
    canvas = np.full((3, h, len(views) * (w + GAP) - GAP), 255, np.uint8)
    for j, view in enumerate(views):
        canvas[:, :, j * (w + GAP):j * (w + GAP) + w] = view
    save_png(canvas, path)
    return w, h


def is_grey(pixels: np.ndarray) -> bool:
    """[..., 3, h, w]: every pixel has R == G == B."""
    return bool((pixels[..., 0, :, :] == pixels[..., 1, :, :]).all() and
                (pixels[..., 1, :, :] == pixels[..., 2, :, :]).all())


class SharedImages:
    """The top-N images of an atlas under <out>/images/, each written once (module doc)."""

    def __init__(self, out: Path, preprocessing: Preprocessing):
        self.folder, self.preprocessing = out / "images", preprocessing
        self.folder.mkdir(exist_ok=True)
        self.written: dict[str, tuple[str, int, int]] = {}  # path -> (file name, width, height)
        self.grey = True  # so far, every image has R == G == B

    def get(self, path: str) -> tuple[str, int, int]:
        """(file name under images/, width, height) of the model's view of the image at `path`."""
        if path not in self.written:
            key = repr((path, self.preprocessing.as_dict()))
            name = hashlib.sha256(key.encode()).hexdigest()[:16] + ".png"
            with Image.open(path) as src:
                pixels = self.preprocessing.pixels(src.convert("RGB")).mul(255).round().byte().numpy()
            self.grey = self.grey and is_grey(pixels)
            save_png(pixels, self.folder / name)
            self.written[path] = (name, pixels.shape[2], pixels.shape[1])
        return self.written[path]


def page_weight(folder) -> dict:
    """Files under an atlas folder, and the bytes of its HTML and of its images."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    html_bytes = sum(p.stat().st_size for p in files if p.suffix == ".html")
    image_bytes = sum(p.stat().st_size for p in files if p.suffix == ".png")
    return {"files": len(files), "html_bytes": html_bytes, "image_bytes": image_bytes}

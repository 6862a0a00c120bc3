"""A layer's patch folder: results/neurons/<model>/<layer>/patches/ (DESIGN.md).

patches.h5: `channels` [S], `pixels` [S,k,3,P,P] uint8 (model input after resize/crop, normalisation undone; a token
layer's: the token with context, neurons.patches), `paths` [S,k], `rows` [S,k] (rows of the source feature store),
`boxes` [S,k,4] (top, left, bottom, right in input pixels, bottom/right exclusive), `activations` [S,k]; attributes:
layer, model, settings and info (JSON: mode, receptive field, the check against the store, a token layer's cell and
context; no timing, which goes to the log), the top-N file, `complete=True` last. A shard file of `peekflow patches
--shard` has this layout and a `shard` attribute (neurons/patch_shards.py).

channel_<c>.png: the k patches of channel c, best first. overview.png: the best patch of every selected channel (the
first OVERVIEW_CHANNELS). In both, a token layer's token is framed in yellow inside its context (patch_view). The
folder is built under a temporary name and renamed when whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

from peekflow.features.store import STR
from peekflow.figures import save_grid
from peekflow.io import atomic_folder, open_complete_h5, plain_attrs
from peekflow.neurons.patches import Patches, token_marks

OVERVIEW_CHANNELS = 512  # cells of overview.png (the first channels): a report figure of a 2,048-channel layer stays
# a few MB (all 2,048 at 48 px: 13.8 MB of random pixels); every channel is in channel_<c>.png and the atlas


def write_patch_h5(path, p: Patches, attrs: dict) -> None:
    """patches.h5 (or a shard file of `peekflow patches --shard`: the same layout); attributes that are not plain
    values are stored as JSON."""
    with h5py.File(path, "w") as h5:
        h5["channels"] = p.channels
        h5.create_dataset("pixels", data=p.pixels, compression="gzip", compression_opts=4)
        h5.create_dataset("paths", data=p.paths.astype(object), dtype=STR)
        h5["rows"], h5["boxes"], h5["activations"] = p.rows, p.boxes, p.activations
        for key, value in attrs.items():
            h5.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
        h5.attrs["complete"] = True


def write_patch_folder(folder, p: Patches, attrs: dict, overview_cell: int = 48) -> None:
    with atomic_folder(folder) as tmp:
        write_patch_h5(tmp / "patches.h5", p, attrs)
        marks = token_marks(p, info_of(attrs))
        # one channel's patches in float at a time: a float copy of all of them is 4x the uint8 pixels
        side = int(min(8, max(1, np.ceil(64 / max(p.pixels.shape[-2:]))))) * max(p.pixels.shape[-2:])
        for s, c in enumerate(p.channels):
            views = [patch_view(p.pixels[s, j], side, None if marks is None else marks[s, j])
                     for j in range(p.pixels.shape[1])]
            save_grid(tmp / f"channel_{c}.png", np.stack(views).astype(np.float32) / 255,
                      ncol=min(len(views), 8), scale=1, labels=[f"{a:.3g}" for a in p.activations[s]])
        shown = range(min(OVERVIEW_CHANNELS, len(p.channels)))
        best = np.stack([patch_view(p.pixels[s, 0], overview_cell, None if marks is None else marks[s, 0])
                         for s in shown]).astype(np.float32) / 255
        save_grid(tmp / "overview.png", best, labels=[f"c{c}" for c in p.channels[:len(shown)]], scale=1)


def info_of(attrs: dict) -> dict:
    """A patch folder's `info` attribute as a dict (it is JSON once read back from patches.h5)."""
    info = (attrs or {}).get("info") or {}
    return json.loads(info) if isinstance(info, str) else info


MARK = (255, 215, 0)  # the token's frame: yellow, as the atlas draws patch boxes


def patch_view(pixels: np.ndarray, side: int, mark=None) -> np.ndarray:
    """[3,h,w] uint8 -> uint8 [3,H,W] whose longer side is `side` (nearest when enlarging, so small patches keep
    their pixels; bilinear when shrinking), with `mark` (top, left, bottom, right in the patch's pixels) framed just
    outside that box."""
    h, w = pixels.shape[1:]
    size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
    pil = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    if pil.size != size:
        pil = pil.resize(size, Image.NEAREST if max(h, w) <= side else Image.BILINEAR)
    if mark is not None:
        sy, sx = size[1] / h, size[0] / w
        t, l, b, r = mark
        width = max(1, side // 64)
        ImageDraw.Draw(pil).rectangle([round(l * sx) - width, round(t * sy) - width, round(r * sx) + width - 1,
                                       round(b * sy) + width - 1], outline=MARK, width=width)
    return np.asarray(pil).transpose(2, 0, 1)


def read_patches(folder) -> tuple[Patches, dict]:
    return read_patch_h5(Path(folder) / "patches.h5")


def read_patch_h5(path) -> tuple[Patches, dict]:
    with open_complete_h5(path, "patch file", "rerun `peekflow patches`") as h5:
        patches = Patches(
            channels=h5["channels"][:], rows=h5["rows"][:], boxes=h5["boxes"][:], activations=h5["activations"][:],
            paths=np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(h5["paths"][:]),
            pixels=h5["pixels"][:],
        )
        attrs = plain_attrs(h5, skip=("complete",))
    return patches, attrs

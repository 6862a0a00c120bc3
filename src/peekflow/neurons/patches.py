"""Top-k patches per channel among its top-N images, in two modes.

*map*: one forward pass per image serves every channel; a channel's patch in an image is the receptive field of the
arg-max unit of its spatial map (neurons.receptive_field), shifted to lie inside the image -- every patch then has the
same size, min(field, image), and holds the part of the field that lies inside the image.
*window*: the patch-activation original's sliding window: the (preprocessed) image is cut into windows of
`window_size` with `window_stride` (full windows only, like torch's unfold); each window is re-run through the model,
either left in place on a canvas of zeros (`window_fill: pad`, the default: zero after normalisation is the mean
colour, and the model sees the window at the scale it ranked the image at) or resized to the image size
(`window_fill: resize`, bilinear, as the original); its score is the channel's spatial max. One pass over an image's
windows serves every channel that has the image among its top-N. By default (`rf`) the windows are map mode's boxes:
the receptive fields of the layer's units (the field's size and stride), shifted inside the input at its border, so
both modes rank patches of the same size and places. Where the field covers the whole input there is one window, the
image itself, so window mode ranks images as the store does. The score stays the original's spatial max, not the unit
at the window's centre: under pad that unit sees exactly the window, so window mode would be map mode again (an
independent check no more), and a shifted border window is no unit's field.

A transformer's token layer (models/tokens.py) credits a unit with its own grid cell only: a 4 x 4 px token of a
32 px input is a blocky square no one can read. Its box stays the token's cell, but its pixels are the token with
context: a window of CONTEXT_TOKENS x CONTEXT_TOKENS cells centred on the token (shifted inside the input, clipped to
it), and `info["token"]` records the cell, the context and the input size, from which `token_marks` gives the token's
place inside each patch's pixels (figures and the atlas frame it; VITAL takes the unframed pixels as references).

Boxes are (top, left, bottom, right) in the model's input pixels (after resize/crop), bottom/right exclusive.
Per channel: at most `per_image` patches from one image; the best `k` of all candidates by activation, ties by the
image's top-N rank, then by position (row-major unit or window order). Every patch has the size of the boxes of the
first channel's best image (images of other sizes give patches resized to it).

The selected channels are searched in batches of `channel_batch` (a batch runs the union of its channels' top-N
images once), so a batch's patches depend only on the settings and the batch: a `BatchPlan` (peekflow.shards) runs a
shard of the batches and keeps finished ones in its partial folder, and shards joined in order (neurons/patch_shards.py)
equal a one-job run bit for bit on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from peekflow.data.folder import Preprocessing
from peekflow.neurons.receptive_field import ReceptiveField, forward_to, receptive_field
from peekflow.neurons.topn import TopN
from peekflow.progress import progress
from peekflow.settings import Settings, setting
from peekflow.shards import BatchPlan, joined

log = logging.getLogger("peekflow")
MODES = ("map", "window")
CACHE_BYTES = 1 << 30  # input images kept (as uint8) between the search and the cropping of the winners
FILLS = ("resize", "pad")
CONTEXT_TOKENS = 5  # token layers: side of a patch's pixels in grid cells (the token and two cells each side)


@dataclass
class PatchSettings(Settings):
    channels: str | list[int] = setting("all", '"all", "start:stop" (stop exclusive) or a list of channel indices')
    k: int = setting(8, "patches per channel", minimum=1)
    per_image: int = setting(1, "most patches taken from one image", minimum=1)
    mode: str = setting("map", "map (receptive field of the arg-max unit) or window (sliding windows)", choices=MODES)
    window_size: int | str = setting("rf", 'window mode: side, input pixels; "rf": the receptive field (clipped)',
                                     choices=["rf"], minimum=1)
    window_stride: int | str = setting("rf", 'window mode: step, input pixels; "rf": the layer\'s stride',
                                       choices=["rf"], minimum=1)
    window_fill: str = setting("pad", "window mode: pad (in place on a zero canvas) or resize (to the input size)",
                               choices=FILLS)
    batch_size: int = setting(64, "images (map) or windows (window) per forward pass", minimum=1)
    channel_batch: int = setting(64, "channels searched together (their top-N images run once per batch): the unit "
                                 "a killed job resumes from and shards split between", minimum=1)


@dataclass
class Patches:
    channels: np.ndarray  # [S] channel indices
    rows: np.ndarray  # [S, k] rows of the source store
    paths: np.ndarray  # [S, k] image paths
    boxes: np.ndarray  # [S, k, 4] (top, left, bottom, right)
    activations: np.ndarray  # [S, k]
    pixels: np.ndarray | None = None  # [S, k, 3, P, P] uint8, filled by crop_patches (token layers: with context)


def select_channels(spec, n_channels: int, layer: str, what: str = "patches") -> np.ndarray:
    """ "all", "start:stop" or a list of ints -> channel indices; fail naming a channel out of range."""
    if spec == "all":
        return np.arange(n_channels)
    if isinstance(spec, str):
        start, sep, stop = spec.partition(":")
        try:
            chosen = list(range(int(start or 0), int(stop) if stop else n_channels)) if sep else [int(spec)]
        except ValueError:
            raise ValueError(f"{what}: channels {spec!r}: expected \"all\", \"start:stop\" or a list") from None
    else:
        chosen = [int(c) for c in spec]
    bad = [c for c in chosen if not 0 <= c < n_channels]
    if bad:
        raise ValueError(f"{what}: channel(s) {bad} out of range: layer {layer!r} has {n_channels} channels")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"{what}: channels {spec!r} must name at least one channel, each once")
    return np.asarray(chosen, dtype=np.int64)


def load_images(paths, preprocessing: Preprocessing, source: str = "the top-N file") -> list[torch.Tensor]:
    images = []
    for path in paths:
        try:
            with Image.open(path) as img:
                images.append(preprocessing(img.convert("RGB")))
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"cannot read image {path} (listed in {source}): {err}") from None
    return images


def _batches(rows, paths, preprocessing, batch_size, desc):
    """Consecutive images of the same size, stacked: (rows, [B,3,H,W])."""
    for start in progress(range(0, len(rows), batch_size), desc=desc):
        chunk = slice(start, start + batch_size)
        images = load_images(paths[chunk], preprocessing)
        for shape in dict.fromkeys(tuple(x.shape) for x in images):
            keep = [i for i, x in enumerate(images) if tuple(x.shape) == shape]
            yield rows[chunk][keep], torch.stack([images[i] for i in keep])


def _inside(start: int, size: int, limit: int) -> tuple[int, int]:
    """A span of min(size, limit) that lies inside [0, limit) and holds [start, start+size) ∩ [0, limit)."""
    size = min(size, limit)
    start = min(max(start, 0), limit - size)
    return start, start + size


def context_box(box, size: tuple[int, int], hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The window of `size` (h, w) centred on `box` (top, left, bottom, right), shifted inside an `hw` input."""
    t, l, b, r = (int(v) for v in box)
    (top, bottom), (left, right) = _inside((t + b - size[0]) // 2, size[0], hw[0]), _inside((l + r - size[1]) // 2,
                                                                                         size[1], hw[1])
    return top, left, bottom, right


def token_marks(patches: Patches, info: dict) -> np.ndarray | None:
    """[S,k,4] the box of each patch inside its pixels (top, left, bottom, right) where the layer is a token layer
    (info["token"], see the module doc); None for other layers, whose pixels are their box."""
    token = info.get("token") if info else None
    if not token:
        return None
    hw, size = tuple(token["input"]), tuple(token["context"])
    origin = np.array([context_box(box, size, hw)[:2] for box in patches.boxes.reshape(-1, 4)]).reshape(
        *patches.boxes.shape[:2], 2)
    return patches.boxes - np.concatenate([origin, origin], axis=-1)


def _stable_top(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` highest scores per row, ties by lower index."""
    return np.argsort(-scores, axis=-1, kind="stable")[..., :count]


class _Candidates:
    """Per selected channel: candidate (activation, top-N rank, position, row, box) lists."""

    def __init__(self, channels, topn: TopN, preprocessing: Preprocessing):
        self.items = [[] for _ in channels]
        self.preprocessing, self.images, self.cached_bytes = preprocessing, {}, 0
        # row -> [(slot of the channel, rank of the row in that channel's top-N)]
        self.needs: dict[int, list[tuple[int, int]]] = {}
        for s, c in enumerate(channels):
            for rank, row in enumerate(topn.indices[c]):
                self.needs.setdefault(int(row), []).append((s, rank))

    def rows(self) -> np.ndarray:
        return np.array(sorted(self.needs), dtype=np.int64)

    def keep(self, rows, x: torch.Tensor) -> None:
        """Remember the images of a batch for cropping, while they fit in CACHE_BYTES."""
        if self.cached_bytes + x.numel() > CACHE_BYTES:
            return
        self.cached_bytes += x.numel()
        for row, pixels in zip(rows, to_uint8(x, self.preprocessing)):
            self.images[int(row)] = pixels

    def best(self, s: int, k: int):
        items = sorted(self.items[s], key=lambda t: (-t[0], t[1], t[2]))
        return items[:k]


def map_candidates(model, layer, topn, channels, rf: ReceptiveField, settings, preprocessing, device) -> _Candidates:
    cand = _Candidates(channels, topn, preprocessing)
    rows = cand.rows()
    path_of = _path_lookup(topn)
    with torch.inference_mode():
        for batch_rows, x in _batches(rows, [path_of[r] for r in rows], preprocessing, settings.batch_size, "map"):
            cand.keep(batch_rows, x)
            maps = forward_to(model, layer, x.to(device)).float().cpu().numpy()  # one transfer per batch
            w = maps.shape[3]
            height, width = x.shape[2:]
            for b, row in enumerate(batch_rows):
                pairs = cand.needs[int(row)]
                flat = maps[b, channels[[s for s, _ in pairs]]].reshape(len(pairs), -1)
                for (s, rank), scores, best in zip(pairs, flat, _stable_top(flat, settings.per_image)):
                    for pos in best:
                        t, l, _, _ = rf.box(*divmod(int(pos), w))
                        (top, bottom), (left, right) = _inside(t, rf.size[0], height), _inside(l, rf.size[1], width)
                        cand.items[s].append((float(scores[pos]), rank, int(pos), int(row), (top, left, bottom, right)))
    return cand


def window_grid(settings: PatchSettings, rf: ReceptiveField, height: int, width: int) -> list[tuple]:
    """Boxes of the full windows in a height x width input, row-major; "rf" = the field (clipped) / the stride."""
    stride = rf.stride if settings.window_stride == "rf" else (settings.window_stride,) * 2
    if settings.window_size == "rf":  # map mode's boxes: the units' fields, those across the border shifted inside
        size = min(rf.size[0], height), min(rf.size[1], width)
        starts = [sorted({0, n - z, *range(o % s, n - z + 1, s)})
                  for o, s, n, z in zip(rf.offset, stride, (height, width), size)]
    elif settings.window_size > min(height, width):
        raise ValueError(f"patches: window_size {settings.window_size} exceeds the {height}x{width} model input")
    else:
        size = (settings.window_size,) * 2
        starts = [range(0, n - z + 1, s) for s, n, z in zip(stride, (height, width), size)]
    return [(t, l, t + size[0], l + size[1]) for t in starts[0] for l in starts[1]]


def _window_inputs(image: torch.Tensor, boxes, fill: str) -> torch.Tensor:
    """Model inputs [len(boxes),3,H,W] of a [3,H,W] image's windows: in place on zeros (pad) or resized."""
    _, height, width = image.shape
    if fill == "resize":
        crops = torch.stack([image[:, t:b, l:r] for t, l, b, r in boxes])
        return F.interpolate(crops, size=(height, width), mode="bilinear", align_corners=False)
    canvas = image.new_zeros(len(boxes), 3, height, width)
    for i, (t, l, b, r) in enumerate(boxes):
        canvas[i, :, t:b, l:r] = image[:, t:b, l:r]
    return canvas


def window_candidates(model, layer, topn, channels, rf, settings, preprocessing, device) -> _Candidates:
    cand = _Candidates(channels, topn, preprocessing)
    rows = cand.rows()
    path_of = _path_lookup(topn)
    n = settings.batch_size
    with torch.inference_mode():
        for batch_rows, x in _batches(rows, [path_of[r] for r in rows], preprocessing, 1, "window"):
            cand.keep(batch_rows, x)
            boxes = window_grid(settings, rf, *x.shape[2:])
            # windows are built batch by batch: an image has (side / stride)^2 of them, each a full-size input
            scores = torch.cat([forward_to(model, layer, _window_inputs(x[0], boxes[i:i + n], settings.window_fill)
                                           .to(device)).float().amax(dim=(2, 3)).cpu()
                                for i in range(0, len(boxes), n)])
            pairs = cand.needs[int(batch_rows[0])]
            per_channel = scores[:, channels[[s for s, _ in pairs]]].T.numpy()  # [pairs, windows]
            for (s, rank), sc, best in zip(pairs, per_channel, _stable_top(per_channel, settings.per_image)):
                for pos in best:
                    cand.items[s].append((float(sc[pos]), rank, int(pos), int(batch_rows[0]), boxes[pos]))
    return cand


def _path_lookup(topn: TopN) -> dict[int, str]:
    return {int(r): str(p) for r, p in zip(topn.indices.ravel(), topn.paths.ravel())}


def find_patches(model, layer: str, topn: TopN, settings: PatchSettings, preprocessing: Preprocessing,
                 device, plan: BatchPlan | None = None) -> tuple[Patches, dict]:
    """The best `k` patches of each selected channel (with a `plan`: of its shard's channel batches, finished ones
    read back from its partial folder); returns them and a summary (receptive field, check against the store)."""
    channels = select_channels(settings.channels, topn.indices.shape[0], layer)
    n = topn.indices.shape[1]
    if settings.k > n * settings.per_image:
        raise ValueError(f"patches: k={settings.k} exceeds top-N ({n}) x per_image ({settings.per_image})")
    model = model.to(device).eval()
    first = load_images([topn.paths[channels[0], 0]], preprocessing)[0]
    rf = receptive_field(model.cpu(), layer, max(first.shape[1:]))
    model.to(device)
    info: dict = {"mode": settings.mode,
                  "receptive_field": {"size": list(rf.size), "stride": list(rf.stride), "offset": list(rf.offset)}}
    log.info("layer %s: receptive field %s, stride %s, offset %s", layer, rf.size, rf.stride, rf.offset)
    if settings.mode == "map" and min(rf.size) >= max(first.shape[1:]):
        log.warning("layer %s: its receptive field (%s px) covers the whole %s px input, so every map-mode patch is "
                    "the whole image: choose an earlier layer, or mode window", layer, "x".join(map(str, rf.size)),
                    "x".join(map(str, first.shape[1:])))
        info["whole_image_patches"] = True
    if rf.token:  # the token's cell with CONTEXT_TOKENS cells of context (module doc)
        size = tuple(min(CONTEXT_TOKENS * f, side) for f, side in zip(rf.size, first.shape[1:]))
        info["token"] = {"cell": list(rf.size), "context": list(size), "input": list(first.shape[1:])}
    elif settings.mode == "map":
        size = tuple(min(f, side) for f, side in zip(rf.size, first.shape[1:]))
    else:
        boxes = window_grid(settings, rf, *first.shape[1:])
        info["windows"] = {"size": [boxes[0][2], boxes[0][3]], "per_image": len(boxes)}  # of the first image
        size = (boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
    parts = (plan or BatchPlan()).batches(
        len(channels), settings.channel_batch, f"patches {layer}",
        lambda j, rows: (batch_patches(model, layer, topn, channels[rows.start:rows.stop], rf, settings,
                                       preprocessing, device, size), {}),
        unit="channels", describe=lambda a: f" (channels {a['channels'][0]}..{a['channels'][-1]})")
    arrays = joined(parts)
    path_of = _path_lookup(topn)
    patches = Patches(**arrays, paths=np.vectorize(path_of.__getitem__, otypes=[object])(arrays["rows"]))
    if settings.mode == "map" and topn.attrs.get("rank_by", "activation") == "activation":
        # one forward pass per image reproduces the store's spatial max (a check that images and model still match;
        # a ranking by relevance holds relevances instead); a max over channels, so the shards' give the one-job one
        store = topn.activations[patches.channels, 0].astype(np.float64)
        info["max_abs_diff_to_topn"] = float(np.abs(patches.activations[:, 0].astype(np.float64) - store).max())
    return patches, info


def batch_patches(model, layer, topn, channels, rf, settings, preprocessing, device, size) -> dict:
    """The arrays of `Patches` (less the paths) of one batch of channels."""
    search = map_candidates if settings.mode == "map" else window_candidates
    cand = search(model, layer, topn, channels, rf, settings, preprocessing, device)
    best = [cand.best(s, settings.k) for s in range(len(channels))]
    short = [int(channels[s]) for s, b in enumerate(best) if len(b) < settings.k]
    if short:
        raise ValueError(f"patches: channels {short} have fewer than k={settings.k} candidate patches "
                         f"(too few units or windows per image for per_image={settings.per_image})")
    path_of = _path_lookup(topn)
    rows = np.array([[b[3] for b in items] for items in best], dtype=np.int64)
    p = Patches(channels=np.asarray(channels, dtype=np.int64), rows=rows,
                paths=np.vectorize(path_of.__getitem__, otypes=[object])(rows),
                boxes=np.array([[b[4] for b in items] for items in best], dtype=np.int64),
                activations=np.array([[b[0] for b in items] for items in best], dtype=np.float32))
    return {"channels": p.channels, "rows": p.rows, "boxes": p.boxes, "activations": p.activations,
            "pixels": crop_patches(p, preprocessing, cand.images, size, context=size if rf.token else None)}


def to_uint8(x: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """Model input [B,3,H,W] -> uint8 pixels with the normalisation undone."""
    mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.std).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).mul(255).round().byte().numpy()


def crop_patches(p: Patches, preprocessing: Preprocessing, cache: dict | None = None,
                 size: tuple[int, int] | None = None, context: tuple[int, int] | None = None) -> np.ndarray:
    """[S, k, 3, ph, pw] uint8 pixels of every box, from the preprocessed image (cached, or loaded again); (ph, pw):
    `size`, or the largest box's; boxes of another size are resized to it. With a `context` (h, w) (token layers):
    the pixels of that window centred on each box (context_box) instead of the box, (ph, pw) = `context`."""
    heights, widths = p.boxes[..., 2] - p.boxes[..., 0], p.boxes[..., 3] - p.boxes[..., 1]
    ph, pw = context or size or (int(heights.max()), int(widths.max()))
    out = np.zeros((*p.rows.shape, 3, ph, pw), np.uint8)
    for row in np.unique(p.rows):
        img = (cache or {}).get(int(row))
        if img is None:
            img = to_uint8(load_images([p.paths[p.rows == row][0]], preprocessing)[0][None], preprocessing)[0]
        for s, j in zip(*np.nonzero(p.rows == row)):
            t, l, b, r = context_box(p.boxes[s, j], (ph, pw), img.shape[1:]) if context else p.boxes[s, j]
            crop = img[:, t:b, l:r]
            if crop.shape[1:] != (ph, pw):  # images of several sizes: bring every patch to one size
                crop = np.asarray(Image.fromarray(crop.transpose(1, 2, 0)).resize((pw, ph), Image.BILINEAR))
                crop = crop.transpose(2, 0, 1)
            out[s, j] = crop
    return out

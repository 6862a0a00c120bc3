"""Decoding and resizing with torchvision.io, where the images are needed: on CUDA, JPEGs are decoded by nvjpeg on the
GPU in one batched call and resized there, so a node's CPU cores no longer bound extraction (`extract.decode:
torchvision`); on the CPU the same code runs with torchvision's CPU decoder.

The geometry is `Preprocessing.pixels`'s exactly (shorter side to `resize`, the longer floored; centre crop with the
offset rounded, black beyond the image); the resize kernel is torch's antialiased bilinear (or bicubic / nearest),
not PIL's, so values differ from the PIL path in their last few levels of 255 (benchmarks/README.md measures it on
the stores and the OOD table). Files nvjpeg cannot take (PNG, CMYK or broken JPEGs) are decoded on the CPU and
copied; an unreadable one fails naming its path, or with `skip_corrupt` is skipped and reported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from peekflow.data.folder import ImageFolder, Preprocessing

_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}  # nearest-exact: PIL's centres


class EncodedFolder(ImageFolder):
    """An image folder whose items are the files' bytes (uint8 [n]), decoded later by `decode_batch`."""

    def __getitem__(self, i: int):
        from torchvision.io import read_file

        path = self.items[i][0]
        return read_file(path), self.labels[i], path


def collate_encoded(batch):
    """(encoded files, labels, paths, []) of a batch of EncodedFolder items (unreadable ones show up when decoded)."""
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch], dtype=torch.int64), [b[2] for b in batch], []


def decode_rgb(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    """One file's pixels as uint8 [3,H,W] on `device`, decoded on the CPU (any format torchvision reads)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)
    except RuntimeError as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def decode_batch(encoded: list[torch.Tensor], paths: list[str], device: torch.device,
                 skip_corrupt: bool = False) -> tuple[list[torch.Tensor], list[int]]:
    """(uint8 [3,H,W] images on `device`, indices of the unreadable files skipped). On CUDA the JPEGs go to nvjpeg in
    one call; a file it refuses, and every file on the CPU, is decoded by torchvision's CPU decoder."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(encoded)
    if device.type == "cuda":
        jpegs = [i for i, data in enumerate(encoded) if data[:2].tolist() == [0xFF, 0xD8]]
        try:
            decoded = decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, decoded):
                out[i] = image
        except RuntimeError:  # e.g. a CMYK or progressive JPEG nvjpeg refuses: each goes to the CPU below
            pass
    skipped = []
    for i, image in enumerate(out):
        if image is None:
            try:
                out[i] = decode_rgb(encoded[i], paths[i], device)
            except ValueError:
                if not skip_corrupt:
                    raise
                skipped.append(i)
    return [image for image in out if image is not None], skipped


def resize_crop(image: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    """uint8 [3,H,W] -> float [3,h,w] in [0,1]: `p`'s resize of the shorter side and centre crop, on the image's
    device (the geometry of Preprocessing.pixels, torch's antialiased kernel)."""
    x = image.float().div_(255)[None]
    if p.resize:
        h, w = x.shape[-2:]
        short, long = min(w, h), max(w, h)
        size = (p.resize, int(p.resize * long / short))
        size = size if w <= h else size[::-1]  # (w, h) as PIL's resize takes it
        mode = _MODES[p.interpolation]
        smooth = mode in ("bilinear", "bicubic")
        x = F.interpolate(x, size=(size[1], size[0]), mode=mode, antialias=smooth,
                          align_corners=False if smooth else None)
        x = x.mul_(255).round_().clamp_(0, 255).div_(255)  # whole levels, as PIL's resize of a uint8 image
    if p.crop:
        h, w = x.shape[-2:]
        left, top = int(round((w - p.crop) / 2.0)), int(round((h - p.crop) / 2.0))
        canvas = x.new_zeros((1, 3, p.crop, p.crop))  # black where the crop reaches beyond the image
        src = x[..., max(top, 0):min(top + p.crop, h), max(left, 0):min(left + p.crop, w)]
        canvas[..., max(-top, 0):max(-top, 0) + src.shape[-2], max(-left, 0):max(-left, 0) + src.shape[-1]] = src
        x = canvas
    return x[0]


def preprocess_batch(images: list[torch.Tensor], p: Preprocessing) -> torch.Tensor:
    """The model's input [B,3,h,w] (normalised) of decoded images, on their device."""
    x = torch.stack([resize_crop(image, p) for image in images])
    mean = torch.tensor(p.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def decode_on_device(loader, device: torch.device, p: Preprocessing, memory_format=torch.contiguous_format,
                     skip_corrupt: bool = False):
    """The (images, labels, paths, skipped) batches of features.pipeline.on_device, from a loader of encoded files
    (collate_encoded): decoded, resized and normalised on `device` (images None where none of a batch was readable)."""
    for encoded, labels, paths, _ in loader:
        images, skipped = decode_batch(encoded, paths, device, skip_corrupt)
        unread = set(skipped)
        keep = [i for i in range(len(paths)) if i not in unread]
        bad = [paths[i] for i in skipped]
        if not keep:
            yield None, None, [], bad
            continue
        x = preprocess_batch(images, p).contiguous(memory_format=memory_format)
        yield x, labels[keep], [paths[i] for i in keep], bad

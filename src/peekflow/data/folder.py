"""Image-folder data sets (`<root>/<class>/<image>`) and the model's preprocessing.

Labels are indices into the *model's* class list (-1 for a folder that is not one of its classes, e.g. every OOD
set), so one reader serves ID and OOD data alike. An unreadable image fails naming its path, or, with
`skip_corrupt`, is skipped and reported by the caller -- never silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


_PIL_MODES = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass
class Preprocessing:
    """Resize (shorter side), centre crop, then normalise; part of a model's config and recorded in every store.

    Done with PIL like torchvision's classic eval transform (Resize(int) floors the long side; CenterCrop rounds the
    offset and pads with black), without importing torchvision, which costs seconds in every job."""

    resize: int | None = None
    crop: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.interpolation not in _PIL_MODES:
            raise ValueError(f"preprocessing: interpolation {self.interpolation!r} not in {sorted(_PIL_MODES)}")

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """The model's input [3, H, W]: `pixels(img)`, normalised."""
        x = self.pixels(img)
        return x.sub_(torch.tensor(self.mean).view(3, 1, 1)).div_(torch.tensor(self.std).view(3, 1, 1))

    def pixels(self, img: Image.Image) -> torch.Tensor:
        """The resized and cropped RGB image as [3, H, W] in [0, 1], before the normalisation."""
        if self.resize:
            w, h = img.size
            short, long = min(w, h), max(w, h)
            size = (self.resize, int(self.resize * long / short))
            img = img.resize(size if w <= h else size[::-1], _PIL_MODES[self.interpolation])
        if self.crop:
            w, h = img.size
            left, top = int(round((w - self.crop) / 2.0)), int(round((h - self.crop) / 2.0))
            img = img.crop((left, top, left + self.crop, top + self.crop))
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)

    def as_dict(self) -> dict:
        return asdict(self)


def list_images(root) -> list[tuple[str, str]]:
    """Sorted (path, class folder) pairs under root/<class>/."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder {root} does not exist")
    items = [
        (str(p), cls.name)
        for cls in sorted(d for d in root.iterdir() if d.is_dir())
        for p in sorted(cls.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise ValueError(f"data set folder {root} holds no images in <class>/<image> layout")
    return items


def class_folders(root) -> list[str]:
    return sorted({cls for _, cls in list_images(root)})


class ImageFolder(torch.utils.data.Dataset):
    def __init__(self, root, classes: list[str] | None, transform, skip_corrupt: bool = False):
        self.items = list_images(root)
        index = {c: i for i, c in enumerate(classes or [])}
        self.labels = [index.get(cls, -1) for _, cls in self.items]
        self.transform, self.skip_corrupt = transform, skip_corrupt

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path = self.items[i][0]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Exception as err:  # PIL raises many types for a bad file
            if self.skip_corrupt:
                return None, self.labels[i], path
            raise ValueError(f"cannot read image {path}: {err}") from None
        return self.transform(img), self.labels[i], path


def collate(batch, pin_memory: bool = False):
    """Stack images (`pin_memory`: straight into pinned memory, for a fast copy to CUDA without the DataLoader's
    second copy; main process only); paths of unreadable images (skip_corrupt) come back separately."""
    good = [b for b in batch if b[0] is not None]
    skipped = [b[2] for b in batch if b[0] is None]
    if not good:
        return None, None, [], skipped
    first = good[0][0]
    out = torch.empty((len(good), *first.shape), dtype=first.dtype, pin_memory=True) if pin_memory else None
    images = torch.stack([b[0] for b in good], out=out)
    labels = torch.tensor([b[1] for b in good], dtype=torch.int64)
    return images, labels, [b[2] for b in good], skipped

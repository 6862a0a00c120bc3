"""Image-folder data sets (`<root>/<class>/<image>`) and the model's preprocessing.

Labels are indices into the *model's* class list (-1 for a folder that is not one of its classes, e.g. every OOD
set), so one reader serves ID and OOD data alike. An unreadable image fails naming its path, or, with
`skip_corrupt`, is skipped and reported by the caller -- never silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class Preprocessing:
    """Resize (shorter side), centre crop, then normalise; part of a model's config and recorded in every store."""

    resize: int | None = None
    crop: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: str = "bilinear"

    def transform(self, augment: bool = False) -> v2.Compose:
        steps = [v2.ToImage()]
        if self.resize:
            mode = v2.InterpolationMode(self.interpolation)
            steps.append(v2.Resize(self.resize, interpolation=mode, antialias=True))
        if self.crop:
            steps.append(v2.CenterCrop(self.crop))
        if augment:  # used by training only: flips and small shifts keep shape classes intact
            steps += [v2.RandomHorizontalFlip(), v2.RandomAffine(degrees=0, translate=(0.08, 0.08))]
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(steps)

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


def collate(batch):
    """Stack images; paths of unreadable images (skip_corrupt) come back separately."""
    good = [b for b in batch if b[0] is not None]
    skipped = [b[2] for b in batch if b[0] is None]
    if not good:
        return None, None, [], skipped
    images = torch.stack([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good], dtype=torch.int64)
    return images, labels, [b[2] for b in good], skipped

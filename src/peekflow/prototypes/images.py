"""Prototypes as a data set of model inputs, for feature extraction (the data-free KNN banks of PEEK).

Each prototype takes the path a real image takes: quantised to 8-bit RGB as a saved PNG would hold it
(peekflow.prototypes.quality.as_pil), then the model's `Preprocessing` -- never the optimiser's float tensor. Items are
(image, target, "") like an ImageFolder's (image, label, path): prototypes have no image file, so their path is
empty (the KNN overlap check skips empty paths).
"""

from __future__ import annotations

import torch

from peekflow.data.folder import Preprocessing
from peekflow.prototypes.quality import as_pil
from peekflow.prototypes.store import Prototypes


class PrototypeImages(torch.utils.data.Dataset):
    def __init__(self, protos: Prototypes, preprocessing: Preprocessing):
        self.images = as_pil(protos.images)
        self.targets = [int(t) for t in protos.targets]
        self.transform = preprocessing

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.targets[i], ""

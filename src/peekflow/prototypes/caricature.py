"""Caricatures (Lucid / torch-dreams): for a real reference image r, optimise an image x so that a layer's response
to x matches, amplified, its response to r:

    loss "match" (default): ||a(x) - amplify * a(r)||^2 / ||amplify * a(r)||^2
    loss "dot" (Lucid):     -<a(x), amplify * a(r)> * cos(a(x), a(r)) ** cos_power

(the synthesis engine's `caricature` objective). Under Adam, which is blind to the scale of the loss, `amplify` only
takes effect with "match"; "dot" grows the response along a(r) without bound instead. What the layer "sees" in r comes out exaggerated; the caricature of
a shape should still be classified as that shape, which the quality stage measures (targets = the references'
classes). References: `per_class` images of every class of the folder that is one of the model's classes, drawn with
the seed. Rendering, seeding, parameterisation and batching are the prototypes' (prototypes/batching.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from peekflow.data.folder import Preprocessing, list_images
from peekflow.device import resolve_device
from peekflow.models.layers import record_layers
from peekflow.prototypes.batching import as_prototypes, render_in_batches, resolve_size, transforms_of
from peekflow.prototypes.store import Prototypes
from peekflow.synthesis.objectives import caricature


@dataclass
class CaricatureSettings:
    layer: str = ""  # required: the layer whose response is matched
    per_class: int = 1  # reference images per class
    amplify: float = 2.0
    loss: str = "match"  # match | dot
    cos_power: float = 1.0  # dot only
    size: int | None = None  # None: the model's crop, else its resize, else the reference images' size
    steps: int = 200
    lr: float = 0.05
    optimizer: str = "adam"
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "constant"
    warmup: int = 0
    grad_clip: float | None = None
    param: str = "fourier"  # fourier | pixel
    init_std: float = 0.01
    jitter: int = 2
    flip: bool = False
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"


def choose_references(root, classes: list[str], per_class: int, seed: int) -> list[tuple[str, int]]:
    """(path, output unit) of `per_class` seeded images per model class present in the folder."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    items = list_images(root)
    chosen = []
    for unit, name in enumerate(classes):
        paths = [p for p, c in items if c == name]
        if paths:
            picks = rng.choice(len(paths), size=min(per_class, len(paths)), replace=False)
            chosen += [(paths[i], unit) for i in sorted(picks)]
    if not chosen:
        raise ValueError(f"image folder {root} has no folder named after a class of the model ({classes[:5]} ...)")
    return chosen


def load_references(paths: list[str], prep: Preprocessing, size: int) -> torch.Tensor:
    """[B,3,size,size] in [0,1]: the model's resize/crop (no normalisation), then resized to the synthesis size."""
    out = []
    for path in paths:
        with Image.open(path) as img:
            x = prep.pixels(img.convert("RGB"))
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        out.append(x.clamp(0, 1))
    return torch.stack(out)


@torch.no_grad()
def layer_response(model: nn.Module, images: torch.Tensor, prep: Preprocessing, layer: str, device) -> torch.Tensor:
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (prep.mean, prep.std))
    model = model.to(device).eval()
    with record_layers(model, [layer]) as acts:
        model((images.to(device) - mean) / std)
    return acts[layer].float()


def make_caricatures(model: nn.Module, classes: list[str], preprocessing: Preprocessing, s: CaricatureSettings,
                     images_root, name: str = "model") -> Prototypes:
    if not s.layer:
        raise ValueError("caricature settings need `layer` (the layer whose response is matched)")
    device = resolve_device(s.device)
    refs = choose_references(images_root, classes, s.per_class, s.seed)
    if not (s.size or preprocessing.crop or preprocessing.resize):
        with Image.open(refs[0][0]) as img:  # a model without resize/crop takes the images as they are
            size = min(img.size)
    else:
        size = resolve_size(s.size, preprocessing)
    paths, targets = [p for p, _ in refs], [u for _, u in refs]
    reference_images = load_references(paths, preprocessing, size)
    target_acts = layer_response(model, reference_images, preprocessing, s.layer, device)
    images, losses, render_settings = render_in_batches(
        list(range(len(refs))), s.batch_size,
        lambda idx: caricature(s.layer, target_acts[idx], amplify=s.amplify, cos_power=s.cos_power, loss=s.loss),
        model, preprocessing, param=s.param, size=size, seed=s.seed, init_std=s.init_std,
        transforms=transforms_of(s.jitter, s.flip), device=device, what=f"caricatures of {name}",
        steps=s.steps, lr=s.lr, optimizer=s.optimizer, betas=s.betas, schedule=s.schedule, warmup=s.warmup,
        grad_clip=s.grad_clip)
    settings = {**asdict(s), "size": size, "references": paths, "images": str(images_root)}
    return as_prototypes("caricature", name, classes, images, targets, losses, settings, render_settings)

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

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from peekflow.data.folder import Preprocessing, list_images
from peekflow.device import resolve_device
from peekflow.models.layers import record_layers
from peekflow.prototypes.batching import as_prototypes, render_in_batches, resolve_size
from peekflow.prototypes.store import Prototypes
from peekflow.settings import redefault, required, setting
from peekflow.shards import BatchPlan
from peekflow.synthesis.objectives import caricature
from peekflow.synthesis.settings import RenderSettings, scaled_jitter


@dataclass(kw_only=True)
class CaricatureSettings(RenderSettings):
    size: int | None = setting(None, "image side in pixels (null: the model's crop, else its resize, else the "
                                     "reference images' size)", minimum=2)
    param: str = redefault(RenderSettings, "param", "fourier")
    jitter: int | None = scaled_jitter(2, 64)  # 2 px at 64 px (the embedded default), 7 px at 224 px
    batch_size: int = redefault(RenderSettings, "batch_size", 32)
    layer: str = required("the layer whose response is matched (a module name of the model)")
    per_class: int = setting(1, "reference images per class", minimum=1)
    amplify: float = setting(2.0, "factor on the reference's layer response")
    loss: str = setting("match", "match (relative squared distance to the amplified response) or dot (Lucid's "
                                 "dot product times cosine^cos_power)", choices=["match", "dot"])
    cos_power: float = setting(1.0, "exponent of the cosine in loss dot", minimum=0)


def reference_targets(s: CaricatureSettings, num_classes: int) -> list[int]:
    """The class of every caricature where each class has `per_class` reference images (a class with fewer images in
    the folder gets fewer)."""
    return [unit for unit in range(num_classes) for _ in range(s.per_class)]


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
                     images_root, name: str = "model", device="auto", plan: BatchPlan | None = None) -> Prototypes:
    if not s.layer:
        raise ValueError("caricature settings need `layer` (the layer whose response is matched)")
    device = resolve_device(device)
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
        list(range(len(refs))),
        lambda idx: caricature(s.layer, target_acts[idx], amplify=s.amplify, cos_power=s.cos_power, loss=s.loss),
        model, preprocessing, s, size=size, device=device, what=f"caricatures of {name}", plan=plan)
    settings = {**asdict(s), "size": size, "jitter": s.jitter_at(size), "references": paths,
                "images": str(images_root)}
    return as_prototypes("caricature", name, classes, images, targets, losses, settings, render_settings, plan)

"""How well prototypes carry their class: the target model's accuracy on its own prototypes and, for transfer, an
independent probe model's (PEEK, What Neural Networks Know).

Prototypes go through exactly the preprocessing real images get: quantised to 8-bit RGB like a saved PNG, then the
model's `Preprocessing` (resize, crop, normalise) -- never straight from the optimiser's float tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.models.layers import pool, record_layers


def as_pil(images: np.ndarray) -> list[Image.Image]:
    """[N,3,H,W] floats in [0,1] -> 8-bit RGB images, as a PNG on disk would hold them."""
    arr = np.rint(np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(a, "RGB") for a in arr]


@torch.inference_mode()
def forward(model: nn.Module, images: np.ndarray, prep: Preprocessing, device, layer: str | None = None,
            batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Softmax probabilities [N,K] of `model` on prototype images and, if `layer` is given, that layer's spatially
    averaged output [N,C] (the features a feature store holds for real images)."""
    model = model.to(device).eval()
    pil = as_pil(images)
    probs, feats = [], []
    with record_layers(model, [layer] if layer else []) as acts:
        for start in range(0, len(pil), batch_size):
            x = torch.stack([prep(img) for img in pil[start:start + batch_size]]).to(device)
            probs.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
            if layer:
                feats.append(pool(acts[layer])[0].float().cpu().numpy())
    return np.concatenate(probs), (np.concatenate(feats) if layer else None)


def predict(model: nn.Module, images: np.ndarray, prep: Preprocessing, device, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities [N,K] of `model` on prototype images."""
    return forward(model, images, prep, device, batch_size=batch_size)[0]


def accuracy_and_confidence(probs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Share of rows whose arg-max is the target, and the mean probability given to the target."""
    targets = np.asarray(targets)
    return float((probs.argmax(1) == targets).mean()), float(probs[np.arange(len(targets)), targets].mean())


def translate_targets(targets: np.ndarray, from_classes: list[str], to_classes: list[str]) -> np.ndarray:
    """Map output units of one model to another's by class name; fail naming a class the other lacks."""
    index = {c: i for i, c in enumerate(to_classes)}
    missing = sorted({from_classes[t] for t in targets} - set(index))
    if missing:
        raise ValueError(f"the probe model has no class(es) {missing}")
    return np.array([index[from_classes[t]] for t in targets], dtype=np.int64)


def diversity(images: np.ndarray, targets: np.ndarray, per_class: int = 16) -> dict:
    """Mean |pixel difference| (images in [0,1]) between prototypes of one class (pairs among its first `per_class`)
    and between classes (the j-th prototypes of neighbouring classes): O(images), not O(images^2). A within-class
    figure far below the between-class one means a class's prototypes are near-duplicates (seeds that do not differ)."""
    groups = [images[targets == c][:per_class].reshape(-1, images[0].size).astype(np.float32)
              for c in np.unique(targets)]
    within = [np.abs(g[i] - g[j]).mean() for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    between = [np.abs(a[j] - b[j]).mean() for a, b in zip(groups, groups[1:]) for j in range(min(len(a), len(b)))]
    return {"within_class_mean_abs_diff": float(np.mean(within)) if within else None,
            "between_class_mean_abs_diff": float(np.mean(between)) if between else None}


def evaluate_quality(protos, target, probe=None, device="cpu") -> dict:
    """Quality of prototypes made for the target model. `target` and `probe` are (model, preprocessing, classes);
    the probe's targets are the same classes by name. Returns shares in [0,1] and per-class target accuracy."""
    model, prep, classes = target
    probs = predict(model, protos.images, prep, device)
    acc, conf = accuracy_and_confidence(probs, protos.targets)
    hits = probs.argmax(1) == protos.targets
    report = {
        "method": protos.method,
        "n": int(len(protos.targets)),
        "target_accuracy": acc,
        "target_confidence": conf,
        "per_class_target_accuracy": {classes[c]: float(hits[protos.targets == c].mean())
                                      for c in np.unique(protos.targets)},
        "diversity": diversity(protos.images, protos.targets),
    }
    if probe is not None:
        p_model, p_prep, p_classes = probe
        p_targets = translate_targets(protos.targets, classes, p_classes)
        report["probe_accuracy"], report["probe_confidence"] = accuracy_and_confidence(
            predict(p_model, protos.images, p_prep, device), p_targets)
        report["chance"] = 1.0 / len(p_classes)
    return report

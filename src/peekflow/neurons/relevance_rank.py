"""Top-N images per channel by relevance (Relevance Maximisation, Achtibat et al., "From attribution maps to
human-understandable explanations through Concept Relevance Propagation", Nature Machine Intelligence 2023).

Activation ranking (neurons.topn) keeps the images where a channel fires most; relevance ranking keeps those where the
channel contributes most to the model's decision: per image, the relevance of the explained class logit (the
predicted class, or the image's label) at the layer, summed over a channel's positions, is the channel's score
(synthesis.relevance: zennit's LRP or Guided Backprop, the code VITAL uses). The store's images are run in batches
and merged into the running best lists exactly as activation ranking merges store rows (topn.merge_block: the same
order and tie-break), so memory stays O(channels x N) whatever the number of images.
"""

from __future__ import annotations

import json
import logging
import numpy as np
import torch

from peekflow.data.folder import Preprocessing
from peekflow.features.store import open_store
from peekflow.io import plain_attrs
from peekflow.neurons.topn import TIE_BREAK, RankSettings, TopN, merge_block
from peekflow.progress import progress
from peekflow.synthesis.relevance import class_relevance

log = logging.getLogger("peekflow")


def channel_scores(model, images: torch.Tensor, layer: str, classes, method: str) -> np.ndarray:
    """[B,3,H,W] normalised -> [B,C]: each channel's relevance (summed over its positions) to the explained class."""
    rel, _ = class_relevance(model, images, [layer], classes, method)
    r = rel[layer].float()
    return (r.flatten(2).sum(2) if r.ndim == 4 else r.flatten(1) if r.ndim == 2 else r.sum(1)).cpu().numpy()


def top_n_relevance(store_path, layer: str, n: int, model, settings: RankSettings, device="cpu") -> TopN:
    """Per channel of `layer`, the `n` images of the store's rows with the highest relevance; the store gives the
    images (paths), their preprocessing and labels."""
    from peekflow.neurons.patches import load_images

    if n < 1:
        raise ValueError(f"top-N: n ({n}) must be positive")
    with open_store(store_path) as h5:
        attrs = plain_attrs(h5)
        paths = np.vectorize(lambda p: p.decode() if isinstance(p, bytes) else p, otypes=[object])(h5["paths"][:])
        labels = h5["labels"][:] if "labels" in h5 else None
    if settings.explain == "label" and (labels is None or (labels < 0).any()):
        raise ValueError(f"top-N by relevance: explain: label, but feature store {store_path} has no label for every "
                         "image; use explain: predicted")
    if "preprocessing" not in attrs:
        raise ValueError(f"feature store {store_path} records no preprocessing: re-extract it")
    preprocessing = Preprocessing(**json.loads(attrs["preprocessing"]))
    rows = len(paths)
    if rows == 0:
        raise ValueError(f"feature store {store_path} holds no images")
    n = min(n, rows)
    model = model.to(device).eval()
    mean = torch.tensor(preprocessing.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, -1, 1, 1)
    best_val = best_idx = None
    for start in progress(range(0, rows, settings.batch_size), desc=f"relevance {layer}"):
        stop = min(start + settings.batch_size, rows)
        images = load_images(paths[start:stop], preprocessing, f"feature store {store_path}")
        classes = None if settings.explain == "predicted" else labels[start:stop]
        if len({tuple(x.shape) for x in images}) == 1:
            x = torch.stack(images).to(device)
            scores = channel_scores(model, (x - mean) / std, layer, classes, settings.relevance)
        else:  # images of several sizes (no resize in the preprocessing): one at a time
            scores = np.concatenate([channel_scores(model, (x[None].to(device) - mean) / std, layer,
                                                    None if classes is None else classes[i:i + 1], settings.relevance)
                                     for i, x in enumerate(images)])
        scores = scores.astype(np.float32)
        if best_val is None:
            best_val = np.empty((scores.shape[1], 0), np.float32)
            best_idx = np.empty((scores.shape[1], 0), np.int64)
        best_val, best_idx = merge_block(best_val, best_idx, scores, start, n)
    keep = ("model", "arch", "dataset", "images", "preprocessing", "checkpoint")
    out_attrs = {"source_store": str(store_path), "layer": layer, "n": n, "rows": rows, "tie_break": TIE_BREAK,
                 **{k: v for k, v in attrs.items() if k in keep},
                 "rank_by": "relevance", "relevance": settings.relevance, "explain": settings.explain}
    return TopN(best_idx, best_val, paths[best_idx], out_attrs)

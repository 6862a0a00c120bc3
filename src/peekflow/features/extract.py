"""Feature extraction: one batched pass of a model over an image folder into an HDF5 feature store.

Forward hooks record the configured layers; each batch's spatial means and maxima go straight to the store, so memory
stays O(batch) whatever the data set size. Mixed precision (`amp`) runs only on CUDA, and stores stay float32.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from peekflow.data.folder import ImageFolder, Preprocessing, collate
from peekflow.features.store import StoreWriter
from peekflow.models.layers import pool, record_layers
from peekflow.progress import progress

log = logging.getLogger("peekflow.extract")


@dataclass
class ExtractSettings:
    layers: list[str]
    batch_size: int = 128
    num_workers: int = 0
    device: str = "auto"
    amp: bool = False
    skip_corrupt: bool = False


def extract_features(
    model: nn.Module,
    root,
    classes: list[str],
    preprocessing: Preprocessing,
    settings: ExtractSettings,
    device: torch.device,
    out,
    attrs: dict,
) -> dict:
    """Write the store `out` for the images under `root`; returns a summary (rows, skipped paths)."""
    dataset = ImageFolder(root, classes, preprocessing, skip_corrupt=settings.skip_corrupt)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    model = model.to(device).eval()
    amp = settings.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    writer, row, skipped = None, 0, []
    try:
        with record_layers(model, settings.layers) as acts, torch.inference_mode():
            for images, labels, paths, bad in progress(loader, desc=f"extract {out}"):
                for path in bad:
                    log.warning("skipped unreadable image %s", path)
                skipped += bad
                if images is None:
                    continue
                with autocast:
                    logits = model(images.to(device, non_blocking=True))
                pooled = {name: pool(acts[name]) for name in settings.layers}
                if writer is None:
                    channels = {name: mean.shape[1] for name, (mean, _) in pooled.items()}
                    writer = StoreWriter(out, len(dataset), logits.shape[1], channels, attrs)
                writer.write(
                    row,
                    logits.float().cpu().numpy(),
                    labels.numpy(),
                    paths,
                    {name: mean.float().cpu().numpy() for name, (mean, _) in pooled.items()},
                    {name: mx.float().cpu().numpy() for name, (_, mx) in pooled.items()},
                )
                row += len(paths)
        if writer is None:
            raise ValueError(f"no readable image in {root}")
        writer.finish({"n_rows": row, "skipped_paths": skipped}, n_rows=row)
    except BaseException as err:
        if writer is not None:
            writer.abort(err)
        raise
    return {"rows": row, "skipped": skipped}

"""Feature extraction: one batched pass of a model over an image folder into an HDF5 feature store.

Forward hooks record the configured layers; each batch's spatial means and maxima go straight to the store, so memory
stays O(batch) whatever the data set size. Mixed precision (`amp`) runs only on CUDA, and stores stay float32;
`channels_last` runs the model in that memory format (restored afterwards). `maps` (default none) also stores whole
spatial maps [N,C,H,W] of the layers it names, as float16 (`maps/<layer>`), for stages that look at image regions
(emergence). The classifier's last layer (W, b) is recorded where it maps a recorded layer's pooled features to the
logits, checked on the first batch (peekflow.features.last_layer). On CUDA the forward of one batch overlaps the copy
of the next one's images and the writing of the last one's results (peekflow.features.pipeline); the store is the
same.

Resumable: each finished batch is kept as a file of the partial folder `<out>.partial/` (peekflow.shards.Batches),
and the store is written from them once all are there, under a temporary name renamed when whole (so the disk holds
the store twice at the end, for a moment); a rerun whose model weights, image list, settings, device and attributes
are the same continues after the batches it finds (anything else starts afresh, logging why). Sharded: `shard` (i, S)
extracts the i-th of S contiguous row ranges, for peekflow.features.shards.merge_shards to join.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from peekflow.data.decode import EncodedFolder, collate_encoded, decode_on_device
from peekflow.data.folder import ImageFolder, Preprocessing, collate
from peekflow.data.sampling import per_class_rows
from peekflow.features.last_layer import LAST_LAYER, LastLayer, find_last_layer
from peekflow.features.pipeline import BackgroundWriter, on_device, to_host
from peekflow.features.store import StoreWriter
from peekflow.models.layers import pool, record_layers
from peekflow.progress import progress
from peekflow.settings import Settings, required, setting
from peekflow.shards import BatchPlan, Batches, check_shard, partial_path, resume_key, shard_record, shard_rows

log = logging.getLogger("peekflow.extract")


@dataclass
class ExtractSettings(Settings):
    layers: list[str] = required("layers whose pooled features are stored (the model's configured layers)")
    batch_size: int = setting(128, "images per forward pass", minimum=1)
    num_workers: int = setting(0, "DataLoader worker processes (image decoding)", minimum=0)
    amp: bool = setting(False, "fp16 autocast, CUDA only (stores stay float32)")
    skip_corrupt: bool = setting(False, "skip unreadable images, listing them in the store and the log")
    maps: list[str] = setting([], "layers whose whole spatial maps are also stored (float16)")
    decode: str = setting("pil", "where images are decoded and resized: pil (PIL, in the loader's processes) or "
                          "torchvision (torchvision.io in the job's process: nvjpeg on the GPU with device cuda; "
                          "values differ from PIL's in the last levels of 255)", choices=["pil", "torchvision"])
    channels_last: bool = setting(False, "model and batches in channels-last memory format (values change by "
                                  "rounding only; ResNet-50 forward on an H200: 1.36x with amp, 0.87x in fp32)")


def extract_features(
    model: nn.Module,
    root,
    classes: list[str],
    preprocessing: Preprocessing,
    settings: ExtractSettings,
    device: torch.device,
    out,
    attrs: dict,
    shard: tuple[int, int] = (0, 1),
    sample: tuple[int, int] | None = None,
) -> dict:
    """Write the store `out` for the images under `root` -- or, with `shard` (i, S), for the i-th of S contiguous
    ranges of its sorted image list; returns a summary (rows, skipped paths). A killed run resumes (module doc).
    `sample` (per_class, seed) keeps only that seeded subsample of each class (data.sampling.per_class_rows),
    chosen before any image is read: a store of what an analysis of the subsample reads, not of the whole set."""
    folder = EncodedFolder if settings.decode == "torchvision" else ImageFolder
    dataset = folder(root, classes, preprocessing, skip_corrupt=settings.skip_corrupt)
    items = dataset.items
    if sample is not None:
        per_class, seed = sample
        chosen = per_class_rows(dataset.labels, per_class, seed)
        attrs = {**attrs, "subsample": {"per_class": per_class, "seed": seed, "of": len(items)}}
        dataset, items = torch.utils.data.Subset(dataset, chosen.tolist()), [items[i] for i in chosen]
        log.info("%s: a subsample of %d images (%d per class, seed %d) of %d", root, len(items), per_class, seed,
                 len(dataset.dataset))
    check_shard(shard, len(items), settings.batch_size, f"extract {root}")
    if shard[1] > 1:
        start, stop = shard_rows(len(items), *shard, settings.batch_size)
        attrs = {**attrs, **shard_record(shard, len(items), settings.batch_size)}
        dataset, items = torch.utils.data.Subset(dataset, range(start, stop)), items[start:stop]
    decode = preprocessing if settings.decode == "torchvision" else None
    return extract_dataset(model, dataset, settings, device, out, attrs, source=str(root), inputs=items,
                           decode=decode)


def extract_dataset(model: nn.Module, dataset, settings: ExtractSettings, device: torch.device, out, attrs: dict,
                    source: str, inputs: list | None = None, decode: Preprocessing | None = None) -> dict:
    """Write the store `out` for a data set of (preprocessed image, label, path) items, named `source` in messages
    (an ImageFolder, or prototypes: peekflow.prototypes.images); returns a summary (rows, skipped paths).
    `inputs` identify the items (e.g. image paths, a prototype file's digest); with them a killed run resumes from
    its finished batches, without them it starts afresh. With `decode`, the items are encoded files
    (peekflow.data.decode.EncodedFolder), decoded and preprocessed with it on `device`."""
    key = None
    if inputs is not None:
        key = resume_key(model, device, {k: v for k, v in asdict(settings).items() if k != "num_workers"},
                         images=hashlib.sha256(json.dumps(inputs).encode()).hexdigest(), attributes=attrs)
    size = settings.batch_size
    with BatchPlan(partial=partial_path(out), key=key) as plan:
        done = set(plan.kept.done())
        todo = [j for j in range(-(-len(dataset) // size)) if j not in done]
        if todo:
            extract_batches(model, dataset, settings, device, plan.kept, todo, f"extract {out}", decode)
        return write_store(out, plan.kept, len(dataset), settings, attrs, source)


def extract_batches(model: nn.Module, dataset, settings: ExtractSettings, device: torch.device, kept: Batches,
                    todo: list[int], desc: str, decode: Preprocessing | None = None) -> None:
    """Compute batches `todo` (numbers j: items [j*B, (j+1)*B)) of `dataset` and keep each in `kept`. The GPU
    computes batch j+1 while batch j is copied to the host and written (peekflow.features.pipeline). The first batch
    with images that no kept batch has checked for the classifier's last layer records it (or that there is none)."""
    size, n = settings.batch_size, len(dataset)
    cuda = device.type == "cuda"
    own_pinning = cuda and settings.num_workers == 0 and decode is None
    if decode is not None:
        collate_fn = collate_encoded
    else:
        collate_fn = functools.partial(collate, pin_memory=True) if own_pinning else collate  # stacked once, pinned
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[range(j * size, min((j + 1) * size, n)) for j in todo],  # batches as in a one-job run
        num_workers=settings.num_workers,
        collate_fn=collate_fn,
        pin_memory=cuda and not own_pinning and decode is None,
        persistent_workers=False,
    )
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device).eval()
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    amp = settings.amp and cuda
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    checked = any(LAST_LAYER in kept.attrs(j) for j in kept.done())
    background = BackgroundWriter(depth=2)
    try:
        recorded = list(dict.fromkeys([*settings.layers, *settings.maps]))
        with record_layers(model, recorded) as acts, torch.inference_mode():
            if decode is not None:
                batches = decode_on_device(progress(loader, desc=desc), device, decode, layout, settings.skip_corrupt)
            else:
                batches = on_device(progress(loader, desc=desc), device, layout)
            for j, (images, labels, paths, bad) in zip(todo, batches):
                for path in bad:
                    log.warning("skipped unreadable image %s", path)
                info, results = {"items": len(paths) + len(bad), "skipped": list(bad)}, {}
                if images is not None:
                    with autocast:
                        logits = model(images)
                    pooled = {name: pool(acts[name]) for name in settings.layers}
                    if not checked:
                        last = find_last_layer(model, {n: mean for n, (mean, _) in pooled.items()}, logits,
                                               tolerance=1e-2 if amp else 1e-4)
                        info[LAST_LAYER], checked = last and {"module": last.module, "input": last.input}, True
                        if last is not None:
                            results[f"{LAST_LAYER}/weight"] = torch.from_numpy(last.weight)
                            results[f"{LAST_LAYER}/bias"] = torch.from_numpy(last.bias)
                    results.update({"logits": logits.float(), "labels": labels})
                    results.update({f"features/{name}": mean.float() for name, (mean, _) in pooled.items()})
                    results.update({f"maxact/{name}": mx.float() for name, (_, mx) in pooled.items()})
                    results.update({f"maps/{name}": spatial_map(acts[name], name).to(
                        torch.float16, memory_format=torch.contiguous_format) for name in settings.maps})
                    del logits, pooled  # the GPU memory is free for the next batch once the copies are done
                background.submit(functools.partial(keep_batch, kept, j, to_host(results), paths, info))
        background.close()
    except BaseException:
        background.close(cancel=True)  # no write runs after this
        raise
    finally:
        if settings.channels_last:
            model.to(memory_format=torch.contiguous_format)


def keep_batch(kept: Batches, j: int, results, paths: list[str], info: dict) -> None:
    """In the writer thread: wait for batch `j`'s copies to the host, then keep its rows (a file of its own)."""
    host, copied = results
    if copied is not None:
        copied.synchronize()
    arrays = {name: x.numpy() for name, x in host.items()}
    if arrays:
        arrays["paths"] = list(paths)
    kept.put(j, arrays, {**info, "rows": len(paths)})


def write_store(out, kept: Batches, n: int, settings: ExtractSettings, attrs: dict, source: str) -> dict:
    """Write the store `out` from the `n` items' finished batches in `kept`, in order; returns (rows, skipped)."""
    batches = range(-(-n // settings.batch_size))
    info = [kept.attrs(j) for j in batches]
    with_rows = [j for j, i in zip(batches, info) if i["rows"]]
    if not with_rows:
        raise ValueError(f"no readable image in {source}")
    first = kept.get(with_rows[0])[0]
    checked = next((j for j, i in zip(batches, info) if LAST_LAYER in i), None)
    last = None
    if checked is not None and info[checked][LAST_LAYER]:
        arrays = first if checked == with_rows[0] else kept.get(checked)[0]
        last = LastLayer(arrays[f"{LAST_LAYER}/weight"], arrays[f"{LAST_LAYER}/bias"], **info[checked][LAST_LAYER])
    layers, maps = settings.layers, {layer: first[f"maps/{layer}"].shape[1:] for layer in settings.maps}
    channels = {layer: first[f"features/{layer}"].shape[1] for layer in layers}
    writer = StoreWriter(out, n, first["logits"].shape[1], channels, attrs, maps=maps, last_layer=last)
    row, skipped = 0, []
    try:
        for j in batches:
            skipped += info[j]["skipped"]
            if not info[j]["rows"]:
                continue
            arrays = first if j == with_rows[0] else kept.get(j)[0]
            writer.write(row, arrays["logits"], arrays["labels"], arrays["paths"],
                         {layer: arrays[f"features/{layer}"] for layer in layers},
                         {layer: arrays[f"maxact/{layer}"] for layer in layers},
                         {layer: arrays[f"maps/{layer}"] for layer in maps})
            row += info[j]["rows"]
        writer.finish({"n_rows": row, "skipped_paths": skipped}, n_rows=row)
    except BaseException:
        writer.abort()
        raise
    return {"rows": row, "skipped": skipped}


def spatial_map(act: torch.Tensor, layer: str) -> torch.Tensor:
    if act.ndim != 4:
        raise ValueError(f"maps: layer {layer!r} gives an output of shape {tuple(act.shape)}, not a spatial map "
                         "[B,C,H,W]; name convolutional layers only")
    return act

"""Feature-store size per image and per ImageNet data set, for config/imagenet_resnet50.yaml's ResNet-50.

Writes a store with peekflow's own writer (`StoreWriter`, what `peekflow extract` uses) with the shapes a
torchvision ResNet-50 gives at 224 px (1000 logits; pooled features and maxima of layer3 [1024] and layer4 [2048];
its last layer fc [1000, 2048]), ImageNet-style image paths and random values, then measures every HDF5 data set's
bytes on disk (`get_storage_size`; the strings of `paths` live in the file's heap: counted as the rest of the file) and
scales them to the data sets of the ImageNet config. Nothing is compressed, so the values do not change the sizes.
Run: python benchmarks/store_size.py --help
"""

from __future__ import annotations

import argparse, os, tempfile
from pathlib import Path

import h5py
import numpy as np

from peekflow.features.last_layer import LastLayer
from peekflow.features.store import StoreWriter
from readme_section import command_line, write_section

CHANNELS = {"layer3": 1024, "layer4": 2048}  # torchvision ResNet-50; config/imagenet_resnet50.yaml's layers
CLASSES = 1000
# the data sets of config/imagenet_resnet50.yaml (and the DeepInversion bank's 10 per class) and their images
DATASETS = [("imagenet_train", 1_281_167), ("imagenet_val", 50_000), ("inaturalist", 10_000), ("sun", 10_000),
            ("places", 10_000), ("textures", 5_640), ("DeepInversion prototypes", 10_000)]


def imagenet_path(i: int) -> str:
    """As `list_images` records them: resources/imagenet/train/<wnid>/<wnid>_<n>.JPEG (56-60 characters)."""
    wnid = f"n{1440764 + 37 * (i // 1300):08d}"
    return f"resources/imagenet/train/{wnid}/{wnid}_{i % 1300 * 7 + 10026}.JPEG"


def write_store(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    fc = LastLayer(rng.normal(size=(CLASSES, CHANNELS["layer4"])).astype(np.float32),
                   rng.normal(size=CLASSES).astype(np.float32), "fc", "layer4")
    wnids = [f"n{1440764 + 37 * i:08d}" for i in range(CLASSES)]
    attrs = {"model": "resnet50", "arch": "resnet50", "classes": wnids, "dataset": "imagenet_train",
             "layers": list(CHANNELS), "preprocessing": {"resize": 256, "crop": 224}}
    writer = StoreWriter(path, n, CLASSES, CHANNELS, attrs, last_layer=fc)
    batch = 256
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        values = {name: rng.random((rows, c), dtype=np.float32) for name, c in CHANNELS.items()}
        writer.write(start, rng.random((rows, CLASSES), dtype=np.float32), rng.integers(0, CLASSES, rows),
                     [imagenet_path(i) for i in range(start, start + rows)], values, values)
    writer.finish({"n_rows": n, "skipped_paths": []})


def measure(path: Path, n: int) -> tuple[dict[str, float], int]:
    """Bytes per image of each row data set (paths: with its string heap) and the bytes that do not grow with N."""
    sizes = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: sizes.__setitem__(name, obj.id.get_storage_size())
                      if isinstance(obj, h5py.Dataset) else None)
    fixed = sum(v for k, v in sizes.items() if k.startswith("last_layer/"))
    rest = os.path.getsize(path) - sum(sizes.values())  # the string heap of `paths`, attributes, HDF5 metadata
    per_image = {k: v / n for k, v in sizes.items() if not k.startswith("last_layer/")}
    per_image["paths"] += rest / n  # nearly all of the rest is the heap (attributes: ~30 kB per file)
    return per_image, fixed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_240, help="rows of the measured store (a multiple of its 1024-row chunks)")
    p.add_argument("--write-readme", action="store_true", help="replace this benchmark's section in README.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="peekflow-store-size-") as tmp:
        path = Path(tmp) / "store.h5"
        write_store(path, args.n)
        per_image, fixed = measure(path, args.n)
    total = sum(per_image.values())
    rows = ["| data set in the store | shape | bytes per image |", "|---|---|---:|"]
    shapes = {"logits": f"[N, {CLASSES}] float32", "labels": "[N] int64", "paths": "[N] utf-8 (+ string heap)",
              **{f"{g}/{k}": f"[N, {c}] float32" for g in ("features", "maxact") for k, c in CHANNELS.items()}}
    rows += [f"| `{k}` | {shapes.get(k, '')} | {v:,.0f} |" for k, v in sorted(per_image.items())]
    rows += [f"| **whole store** | | **{total:,.0f}** (+ {fixed / 1e6:.1f} MB per file: `last_layer`, fc [1000, 2048]) |"]
    l4 = per_image["features/layer4"]
    sets = ["| data set | images | whole store | of which `features/layer4` |", "|---|---:|---:|---:|"]
    sets += [f"| {name} | {n:,} | {(n * total + fixed) / 1e9:,.2f} GB | {n * l4 / 1e9:,.2f} GB |" for name, n in DATASETS]
    all_n = sum(n for _, n in DATASETS)
    sets += [f"| all | {all_n:,} | {(all_n * total + fixed * len(DATASETS)) / 1e9:,.1f} GB | {all_n * l4 / 1e9:,.1f} GB |"]
    section = "\n".join([
        "## Feature-store size at ImageNet scale (`store_size.py`)", "",
        "A store written by `StoreWriter` (the writer of `peekflow extract`) with the shapes of config/"
        "imagenet_resnet50.yaml's ResNet-50 (layers layer3 and layer4, 1000 classes), measured on disk per HDF5 data "
        f"set ({args.n:,} rows, ImageNet-style paths of ~58 characters) and scaled to the config's data sets "
        "(GB = 10^9 bytes; nothing is compressed).", "",
        *rows, "", *sets, "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("store_size", section)


if __name__ == "__main__":
    main()

"""Page weight of the neuron atlas: bytes of HTML and PNG of an atlas folder, and of one layer's index page with the
thumbnails it lazy-loads, for a built atlas (--atlas results/atlas/<model>) and for a synthetic 2,048-channel layer
(--channels; random 32 px images, top-N --topn, k --k; random pixels are the worst case for PNG size), and the two
per-layer figures such a layer adds to the Snakemake report: the patch overview (one 48 px cell per channel) and the
VITAL grid (its first 32 channels).
Run: PYTHONPATH=src python benchmarks/atlas_weight.py [--atlas results/atlas/tiny_resnet] [--channels 2048]
"""

from __future__ import annotations

import argparse, json, os, tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from peekflow.neurons.atlas import LayerInputs, build_atlas, page_weight
from peekflow.neurons.patch_files import write_patch_h5
from peekflow.neurons.patches import Patches
from peekflow.neurons.topn import TopN, write_topn


def index_weight(layer_dir: Path) -> dict:
    """The layer index: its HTML, and its thumbnails (all lazy: a browser fetches only those scrolled into view)."""
    thumbs = list((layer_dir / "img").glob("thumb_*.png"))
    return {"index_html_bytes": (layer_dir / "index.html").stat().st_size, "thumbnails": len(thumbs),
            "thumbnail_bytes": sum(p.stat().st_size for p in thumbs)}


def synthetic(work: Path, channels: int, n: int, k: int, side: int = 32) -> dict:
    rng = np.random.default_rng(0)
    images = []
    for i in range(max(n, 16)):
        path = work / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    rows = np.stack([rng.permutation(len(images))[:n] for _ in range(channels)])
    attrs = {"layer": "synthetic", "n": n, "rows": len(images),
             "preprocessing": json.dumps({"resize": None, "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3,
                                          "interpolation": "bilinear"})}
    write_topn(work / "topn.h5", TopN(rows, np.sort(rng.random((channels, n), np.float32))[:, ::-1].copy(),
                                      np.asarray(images, dtype=object)[rows], attrs))
    (work / "patches").mkdir()
    boxes = np.broadcast_to(np.array([4, 4, 20, 20]), (channels, k, 4)).copy()
    write_patch_h5(work / "patches" / "patches.h5", Patches(
        channels=np.arange(channels), rows=rows[:, :k], paths=np.asarray(images, dtype=object)[rows[:, :k]],
        boxes=boxes, activations=np.ones((channels, k), np.float32),
        pixels=rng.integers(0, 256, (channels, k, 3, 16, 16), dtype=np.uint8)), {"layer": "synthetic"})
    out = work / "atlas"
    build_atlas(out, "synthetic", {"synthetic": LayerInputs(str(work / "topn.h5"), str(work / "patches"))})
    return {"channels": channels, "topn": n, "k": k, **page_weight(out), **index_weight(out / "synthetic"),
            **report_figures(work, rng, channels, k)}


def report_figures(work: Path, rng, channels: int, k: int, side: int = 64) -> dict:
    """Bytes of the report figures of a layer with `channels` channels: overview.png and vital.png."""
    from peekflow.neurons.patch_files import write_patch_folder
    from peekflow.neurons.vital import VitalResult
    from peekflow.neurons.vital_files import save_vital_grid

    pixels = rng.integers(0, 256, (channels, k, 3, side, side), dtype=np.uint8)
    write_patch_folder(work / "figures", Patches(
        channels=np.arange(channels), rows=np.zeros((channels, k), np.int64),
        paths=np.full((channels, k), "x.png", dtype=object), boxes=np.zeros((channels, k, 4), np.int64),
        activations=np.ones((channels, k), np.float32), pixels=pixels), {"layer": "synthetic"})
    images = rng.random((channels, 3, side, side), dtype=np.float32)
    save_vital_grid(work / "vital.png", VitalResult(
        channels=np.arange(channels), plain=images, vital=images, references=pixels.astype(np.float32) / 255,
        activation={}, seconds={}, match_layers={}))
    return {"report_overview_png_bytes": (work / "figures" / "overview.png").stat().st_size,
            "report_vital_png_bytes": (work / "vital.png").stat().st_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atlas", help="a built atlas folder (results/atlas/<model>)")
    p.add_argument("--channels", type=int, default=2048)
    p.add_argument("--topn", type=int, default=4)
    p.add_argument("--k", type=int, default=2)
    args = p.parse_args()
    if args.atlas:
        atlas = Path(args.atlas)
        layers = {d.name: index_weight(d) for d in sorted(atlas.iterdir()) if d.is_dir()}
        print(json.dumps({"atlas": str(atlas), **page_weight(atlas), "layers": layers}))
    if args.channels:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(synthetic(Path(tmp), args.channels, args.topn, args.k)))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

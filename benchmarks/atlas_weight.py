"""Size of the neuron atlas: files and bytes of HTML and PNG of an atlas folder, and of one layer's index page with
the thumbnails it lazy-loads, for a built atlas (--atlas results/atlas/<model>) and for synthetic layers of --channels
channels (e.g. the embedded default's layer4: 128; an ImageNet ResNet-50's layer4: 2,048) ranked over real images
(--shapes N: the embedded default's ID shapes, N per class at 64 px, generated here by `peekflow generate`; or
--images: a folder of PNGs; random rankings, top-N --topn, k --k, each patch the --patch px crop at a random place)
or over random --side px images (the worst case for PNG size); and the two
per-layer figures such a layer adds to the Snakemake report: the patch overview (one 48 px cell per channel) and the
VITAL grid (its first 32 channels).
Run: PYTHONPATH=src python benchmarks/atlas_weight.py [--atlas results/atlas/tiny_resnet] [--channels 128 2048]
         [--shapes 300 | --images resources/datasets/shapes/train] [--write-readme]
"""

from __future__ import annotations

import argparse, json, os, shutil, subprocess, sys, tempfile, types
from pathlib import Path

import numpy as np
from PIL import Image

from peekflow.neurons import atlas
from peekflow.neurons.atlas import page_weight
from peekflow.neurons.patch_files import write_patch_h5
from peekflow.neurons.patches import Patches
from peekflow.neurons.topn import TopN, write_topn

sys.path.insert(0, str(Path(__file__).parent))
from readme_section import command_line, write_section

PREPROCESSING = {"resize": None, "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear"}


def index_weight(layer_dir: Path) -> dict:
    """The layer index: its HTML, and its thumbnails (all lazy: a browser fetches only those scrolled into view)."""
    thumbs = list((layer_dir / "img").glob("thumb_*.png"))
    return {"index_html_bytes": (layer_dir / "index.html").stat().st_size, "thumbnails": len(thumbs),
            "thumbnail_bytes": sum(p.stat().st_size for p in thumbs)}


def shapes(work: Path, per_class: int) -> str:
    """The embedded default's ID shapes (its ten classes, 64 px), `per_class` each, generated into `work`."""
    from peekflow.cli import main as peekflow
    from peekflow.data.shapes import DEFAULT_ID_SHAPES

    settings = {"seed": 0, "splits": {"train": per_class}, "classes": list(DEFAULT_ID_SHAPES)}
    if peekflow(["generate", "--kind", "shapes", "--out", str(work / "shapes"), "--settings", json.dumps(settings)]):
        raise SystemExit("peekflow generate failed")
    return str(work / "shapes" / "train")


def source_images(work: Path, folder: str | None, side: int, rng) -> list[str]:
    if folder:
        return sorted(str(p) for p in Path(folder).rglob("*.png"))
    images = []
    for i in range(64):
        images.append(str(work / f"img_{i}.png"))
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(images[-1])
    return images


def synthetic(work: Path, channels: int, n: int, k: int, images: list[str], patch: int, rng, builders: dict) -> list:
    """The atlas of one layer of `channels` channels whose top-N images are drawn at random from `images`, built by
    each of `builders` (name -> atlas module) on the same inputs."""
    rows = np.stack([rng.choice(len(images), n, replace=False) for _ in range(channels)])
    paths = np.asarray(images, dtype=object)[rows]
    attrs = {"layer": "synthetic", "n": n, "rows": len(images), "preprocessing": json.dumps(PREPROCESSING)}
    write_topn(work / "topn.h5", TopN(rows, np.sort(rng.random((channels, n), np.float32))[:, ::-1].copy(), paths,
                                      attrs))
    pixels = {row: np.asarray(Image.open(images[row]).convert("RGB")).transpose(2, 0, 1) for row in
              np.unique(rows[:, :k])}
    side = next(iter(pixels.values())).shape[1]
    patch = min(patch, side)
    corners = rng.integers(0, side - patch + 1, (channels, k, 2))
    boxes = np.concatenate([corners, corners + patch], axis=-1)
    crops = np.stack([[pixels[rows[c, j]][:, t:b, l:r] for j, (t, l, b, r) in enumerate(boxes[c])]
                      for c in range(channels)])
    (work / "patches").mkdir()
    write_patch_h5(work / "patches" / "patches.h5", Patches(
        channels=np.arange(channels), rows=rows[:, :k], paths=paths[:, :k], boxes=boxes,
        activations=np.ones((channels, k), np.float32), pixels=crops), {"layer": "synthetic"})
    figures = report_figures(work, rng, channels, k)
    rows = []
    for name, module in builders.items():
        out = work / f"atlas_{name}"
        module.build_atlas(out, "synthetic", {"synthetic": module.LayerInputs(str(work / "topn.h5"),
                                                                             str(work / "patches"))})
        rows.append({"atlas": name, "channels": channels, "topn": n, "k": k, "patch_px": patch, "image_px": side,
                     "distinct_top_images": len(set(paths.ravel())), **page_weight(out),
                     **index_weight(out / "synthetic"), **figures})
        shutil.rmtree(out)
    return rows


def baseline_atlas(rev: str):
    """peekflow.neurons.atlas as it was at git revision `rev` (a module of its own, beside today's)."""
    source = subprocess.run(["git", "show", f"{rev}:src/peekflow/neurons/atlas.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parent).stdout
    module = sys.modules[f"atlas_at_{rev}"] = types.ModuleType(f"atlas_at_{rev}")  # dataclasses look it up there
    exec(compile(source, f"{rev}:src/peekflow/neurons/atlas.py", "exec"), module.__dict__)
    return module


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
    p.add_argument("--channels", type=int, nargs="*", default=[128, 2048])
    p.add_argument("--images", help="a folder of PNGs to rank (default: random --side px images)")
    p.add_argument("--shapes", type=int, help="rank the default's ID shapes, this many per class, generated here")
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--patch", type=int, default=64, help="patch side (the default's layer4: its whole 64 px input)")
    p.add_argument("--topn", type=int, default=16)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--baseline", default="566e2c0", help="git revision whose atlas.py is the baseline (before issue "
                   "30: a copy of every top-N image and patch per neuron); empty: none")
    p.add_argument("--write-readme", action="store_true")
    args = p.parse_args()
    builders = {"now": atlas, **({f"before ({args.baseline})": baseline_atlas(args.baseline)} if args.baseline else {})}
    rows = []
    if args.atlas:
        built = Path(args.atlas)
        layers = {d.name: index_weight(d) for d in sorted(built.iterdir()) if d.is_dir() and d.name != "images"}
        print(json.dumps({"atlas": str(built), **page_weight(built), "layers": layers}))
    with tempfile.TemporaryDirectory() as data:
        folder = shapes(Path(data), args.shapes) if args.shapes else args.images
        for channels in args.channels:
            with tempfile.TemporaryDirectory() as tmp:
                rng = np.random.default_rng(0)
                images = source_images(Path(tmp), folder, args.side, rng)
                rows += synthetic(Path(tmp), channels, args.topn, args.k, images, args.patch, rng, builders)
                print(*map(json.dumps, rows[-len(builders):]), sep="\n", flush=True)
    if not rows:
        return
    mb = lambda b: f"{b / 1e6:.1f}"  # noqa: E731
    table = [f"| {r['channels']:,} | {r['atlas']} | {r['distinct_top_images']:,} | {r['files']:,} | "
             f"{mb(r['html_bytes'] + r['image_bytes'])} | {mb(r['image_bytes'])} | "
             f"{mb(r['index_html_bytes'] + r['thumbnail_bytes'])} | "
             f"{mb(r['report_overview_png_bytes'])} | {mb(r['report_vital_png_bytes'])} |" for r in rows]
    now = {r["channels"]: r for r in rows if r["atlas"] == "now"}
    ratios = "; ".join(f"{c:,} channels: {r['files'] / now[c]['files']:.1f}x the files, "
                       f"{(r['html_bytes'] + r['image_bytes']) / (now[c]['html_bytes'] + now[c]['image_bytes']):.1f}x "
                       "the bytes" for r in rows if r["atlas"] != "now" for c in [r["channels"]])
    source = (f"the default's ID shapes ({len(images):,}: {args.shapes} per class, 64 px, `peekflow generate`)"
              if args.shapes else f"{len(images):,} images of {args.images}" if args.images else
              f"{len(images)} random {args.side} px images")
    section = "\n".join([
        "## Size of the neuron atlas (`atlas_weight.py`)", "",
        "One layer's atlas (layer index, neuron pages and their images; the home page adds a few KB).", "",
        f"Baseline: the atlas before issue 30 (`{args.baseline}`'s atlas.py, loaded by `git show`), on the same inputs."
        if args.baseline else "No baseline.", "",
        "| channels | atlas | distinct top-N images | files | MB in all | of which images | layer index + its "
        "thumbnails, MB | report overview.png, MB | report vital.png, MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|", *table, "",
        *([f"**The baseline against now: {ratios}.**", ""] if ratios else []),
        f"Top-{args.topn} images per channel drawn at random from {source}; k = {args.k} patches of {args.patch} px "
        "per channel (the embedded default's layer4: its field covers the whole 64 px input). Now, files per neuron: "
        "its page and its thumbnail (VITAL and s-AMS add one strip each where run); every top-N image once for the "
        "whole atlas, the patch boxes and the patches CSS frames and crops of it. Before: per neuron its page, its "
        "thumbnail, a copy of each top-N image with the boxes drawn in and a file per patch.", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("atlas_weight", section)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

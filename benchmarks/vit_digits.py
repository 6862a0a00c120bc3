"""A newcomer's own vision transformer (issue 30), built the way the workflow builds it, on the CPU in minutes.

ID data: scikit-learn's bundled digits 0-5 (8 x 8 px, no download), enlarged to 32 px greyscale, split 80/20 (seeded).
Target: timm's vit_tiny_patch16_224 with img_size 32, patch_size 4, depth 4 (8 x 8 tokens of 192 channels); probe:
small_resnet; both trained by `peekflow train`. Then, per layer, `peekflow extract`, `topn`, `patches` and `atlas` write
under --work what the workflow writes under results/ (results/models/<m>/model.pt, results/neurons/<m>/<layer>/...,
results/atlas/<m>), and --work/config.yaml names the two models as the workflow's config would, so that
vital_faithfulness.py runs on it unchanged:
  cd <work> && python <repo>/benchmarks/vital_faithfulness.py --layers blocks.3 --channels 0:16 \\
      --settings '{"relevance": "gradient", "match_layers": {"blocks.0": 1, "blocks.1": 1, "blocks.2": 1}}'
--bare <folder> also writes a copy whose patch folders hold what the patch search wrote before issue 30, each token's
bare 4 x 4 px cell (crop_patches without context), the models linked: VITAL's references as they were.
Run: PYTHONPATH=src python benchmarks/vit_digits.py --work /tmp/vit_digits [--epochs 12] [--bare /tmp/vit_digits_bare]
"""

from __future__ import annotations

import argparse, json, os, time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from peekflow.cli import main as peekflow

CLASSES = 6
PREP = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
VIT = {"arch": "timm/vit_tiny_patch16_224", "num_classes": CLASSES, "preprocessing": PREP,
       "arch_kwargs": {"img_size": 32, "patch_size": 4, "depth": 4}, "layers": ["blocks.1", "blocks.2", "blocks.3"],
       "penultimate": "fc_norm"}
PROBE = {"arch": "small_resnet", "num_classes": CLASSES, "preprocessing": PREP, "layers": ["layer4"],
         "penultimate": "layer4"}


def write_digits(root: Path, seed: int = 0) -> dict[str, Path]:
    """digits 0-5 as 32 px greyscale PNGs (R = G = B) in <root>/{train,val}/<digit>/."""
    from sklearn.datasets import load_digits

    digits = load_digits(n_class=CLASSES)
    order = np.random.default_rng(seed).permutation(len(digits.target))
    cut = int(0.8 * len(order))
    for split, rows in (("train", order[:cut]), ("val", order[cut:])):
        for i in rows:
            grey = Image.fromarray(np.uint8(np.rint(digits.images[i] * 255 / 16))).resize((32, 32), Image.BILINEAR)
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            grey.convert("RGB").save(folder / f"{i:04d}.png")
    return {split: root / split for split in ("train", "val")}


def bare_copy(work: Path, out: Path) -> None:
    """`out`: config and models of `work` (linked), its patch folders with each token's bare cell as the pixels."""
    from peekflow.data.folder import Preprocessing
    from peekflow.neurons.patch_files import read_patches, write_patch_folder
    from peekflow.neurons.patches import crop_patches

    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text((work / "config.yaml").read_text())
    if not (out / "results" / "models").exists():
        (out / "results" / "models").symlink_to(work / "results" / "models")
    for layer in VIT["layers"]:
        src, dst = (root / "results" / "neurons" / "digits_vit" / layer for root in (work, out))
        dst.mkdir(parents=True, exist_ok=True)
        (dst / "topn.h5").write_bytes((src / "topn.h5").read_bytes())
        patches, attrs = read_patches(src / "patches")
        info = json.loads(attrs["info"])
        info.pop("token", None)
        patches.pixels = crop_patches(patches, Preprocessing(**PREP))
        write_patch_folder(dst / "patches", patches, {**attrs, "info": info})


def run(*args: str) -> None:
    start = time.perf_counter()
    if peekflow(list(args)) != 0:
        raise SystemExit(f"peekflow {args[0]} failed")
    print(f"peekflow {args[0]}: {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="folder to build in (its results/ mirror the workflow's)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--topn", type=int, default=16)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bare", default=None, help="also write the copy with bare token patches here (module doc)")
    args = p.parse_args()
    work = Path(args.work).resolve()
    data = write_digits(work / "data")
    train = {"epochs": args.epochs, "batch_size": 64, "augment": False}
    settings = {"digits_vit": {**train, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
                "digits_probe": {**train, "lr": 0.05}}
    config = {"models": {"digits_vit": VIT, "digits_probe": PROBE}, "target_model": "digits_vit",
              "probe_model": "digits_probe"}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    threads = ["--threads", str(args.threads), "--device", "cpu"]
    for name, spec in config["models"].items():
        out = work / "results" / "models" / name
        if not (out / "model.pt").exists():
            run("train", "--model", json.dumps({"name": name, **{k: spec[k] for k in spec if k not in (
                "layers", "penultimate")}}), "--train-images", str(data["train"]), "--val-images", str(data["val"]),
                "--settings", json.dumps(settings[name]), *threads, "--out-checkpoint", str(out / "model.pt"),
                "--out-metrics", str(out / "metrics.json"))
        print(name, json.loads((out / "metrics.json").read_text()), flush=True)
    vit = json.dumps({"name": "digits_vit", **{k: VIT[k] for k in VIT if k not in ("layers", "penultimate")}})
    checkpoint = str(work / "results" / "models" / "digits_vit" / "model.pt")
    store = work / "results" / "features" / "digits_vit" / "digits_train.h5"
    if not store.exists():
        run("extract", "--checkpoint", checkpoint, "--model", vit, "--images", str(data["train"]), "--dataset-name",
            "digits_train", "--settings", json.dumps({"layers": VIT["layers"]}), *threads, "--out", str(store))
    layers = {}
    for layer in VIT["layers"]:
        folder = work / "results" / "neurons" / "digits_vit" / layer
        if not (folder / "topn.h5").exists():
            run("topn", "--store", str(store), "--layer", layer, "--n", str(args.topn), "--out",
                str(folder / "topn.h5"))
        if not (folder / "patches" / "patches.h5").exists():
            run("patches", "--checkpoint", checkpoint, "--model", vit, "--topn", str(folder / "topn.h5"),
                "--settings", json.dumps({"k": args.k}), *threads, "--out", str(folder / "patches"))
        layers[layer] = {"topn": str(folder / "topn.h5"), "patches": str(folder / "patches")}
    atlas = work / "results" / "atlas" / "digits_vit"
    run("atlas", "--model", "digits_vit", "--layers", json.dumps(layers), "--out", str(atlas))
    files = [f for f in atlas.rglob("*") if f.is_file()]
    print(json.dumps({"atlas": str(atlas), "files": len(files), "bytes": sum(f.stat().st_size for f in files)}))
    if args.bare:
        bare_copy(work, Path(args.bare).resolve())


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()

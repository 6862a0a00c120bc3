"""Extraction throughput (images/s): `peekflow extract` against a plain per-batch loop, same data, model and layers.

Baseline: same ImageFolder, DataLoader settings, model and forward hooks; per batch the logits and each layer's spatial
mean and max are copied to numpy lists (nothing written). peekflow: `extract_features` in-process (what the CLI calls),
writing a real HDF5 store. Runs are interleaved; overhead = baseline rate / peekflow rate - 1. The CLI as a subprocess
(incl. start-up and model loading) is timed once, separately.  Run: python benchmarks/extract_throughput.py --help
"""

from __future__ import annotations

import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from peekflow.data.folder import ImageFolder, Preprocessing, collate
from peekflow.device import resolve_device
from peekflow.features.extract import ExtractSettings, extract_features
from peekflow.models.checkpoint import load_model, save_checkpoint
from peekflow.models.layers import get_layers
from peekflow.models.registry import build_model
from readme_section import command_line, write_section

README = Path(__file__).with_name("README.md")
CLASSES = [f"class{i}" for i in range(10)]
PREP = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # as the default config's models


def make_data(root: Path, n: int, size: int, seed: int = 0) -> None:
    """n random PNGs over 10 class folders, each class brighter in one channel (like tests/conftest.py)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / CLASSES[i % 10]
        folder.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        img[..., (i % 10) % 3] += 120
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def plain_loop(model, root, settings: ExtractSettings, device) -> dict:
    """The baseline: hooks keep layer outputs; per batch, logits + spatial mean/max go to numpy lists."""
    dataset = ImageFolder(root, CLASSES, Preprocessing(**PREP))
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, num_workers=settings.num_workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda")
    model = model.to(device).eval()
    modules, acts = dict(model.named_modules()), {}
    hooks = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: acts.__setitem__(name, out))
             for name in settings.layers]
    kept = defaultdict(list)
    try:
        with torch.inference_mode():
            for images, labels, _paths, _bad in loader:
                kept["logits"].append(model(images.to(device, non_blocking=True)).cpu().numpy())
                kept["labels"].append(labels.numpy())
                for name in settings.layers:
                    kept[f"features/{name}"].append(acts[name].mean(dim=(2, 3)).cpu().numpy())
                    kept[f"maxact/{name}"].append(acts[name].amax(dim=(2, 3)).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return {k: np.concatenate(v) for k, v in kept.items()}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start




def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="images (over 10 class folders)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--arch", default="small_resnet", help="peekflow built-in or torchvision classifier")
    p.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"], help="conv layers")
    p.add_argument("--batch-size", type=int, default=250, help="as config/config.yaml's extract.batch_size")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--threads", type=int, default=1, help="torch threads (torch.set_num_threads)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--reps", type=int, default=5, help="timed runs of each, interleaved, after one warm-up each")
    p.add_argument("--workdir", help="keep data, checkpoint and stores here (default: a temporary folder)")
    p.add_argument("--no-cli", action="store_true", help="skip timing the `peekflow extract` subprocess")
    p.add_argument("--write-readme", action="store_true", help=f"replace this benchmark's section in {README.name}")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = ExtractSettings(layers=args.layers, batch_size=args.batch_size, num_workers=args.workers)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="peekflow-bench-")  # removed at exit
    work = Path(args.workdir or tmp.name)
    images, ckpt = work / "images", work / "model.pt"
    made = work / "data.json"  # a --workdir keeps its images while N and size stay the same
    if not made.exists() or json.loads(made.read_text()) != [args.n, args.size]:
        shutil.rmtree(images, ignore_errors=True)
        make_data(images, args.n, args.size)
        made.write_text(json.dumps([args.n, args.size]))
    torch.manual_seed(0)
    save_checkpoint(ckpt, build_model(args.arch, 10), args.arch, CLASSES, {})
    model, _ = load_model(ckpt, args.arch, 10)
    get_layers(model, args.layers)  # fails naming the valid layers
    prep = Preprocessing(**PREP)
    attrs = {"model": "bench", "arch": args.arch, "classes": CLASSES, "dataset": "bench", "layers": args.layers}
    store = work / "features.h5"

    def run_peekflow():
        extract_features(model, images, CLASSES, prep, settings, device, store, attrs)

    baseline_s, peekflow_s = [], []
    plain_loop(model, images, settings, device)  # warm-up of each
    run_peekflow()
    for _ in range(args.reps):
        baseline_s.append(timed(lambda: plain_loop(model, images, settings, device)))
        peekflow_s.append(timed(run_peekflow))
    # same work: the store must hold exactly what the baseline copied out
    kept = plain_loop(model, images, settings, device)
    with h5py.File(store) as h5:
        for key, values in kept.items():
            np.testing.assert_allclose(h5[key][:], values, rtol=1e-5, atol=1e-6, err_msg=key)

    rows = [("plain loop (baseline)", baseline_s), ("peekflow `extract_features`", peekflow_s)]
    if not args.no_cli:
        cli = shutil.which("peekflow", path=str(Path(sys.executable).parent))
        cmd = ([cli, "extract"] if cli else [sys.executable, "-m", "peekflow.cli.extract"]) + [
            "--checkpoint", str(ckpt), "--images", str(images), "--dataset-name", "bench", "--out", str(store),
            "--model", json.dumps({"name": "bench", "arch": args.arch, "num_classes": 10, "preprocessing": PREP}),
            "--settings", json.dumps(vars(settings)), "--device", args.device, "--threads", str(args.threads)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"peekflow extract failed:\n{done.stderr}")
        rows.append(("`peekflow extract` CLI, 1 run incl. start-up", [time.perf_counter() - start]))

    rate = {name: args.n / statistics.median(s) for name, s in rows}
    overhead = 100 * (rate[rows[0][0]] / rate[rows[1][0]] - 1)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    table = ["| run | images/s (median) | s per run (median) | runs |", "|---|---:|---:|---:|"]
    table += [f"| {name} | {rate[name]:.0f} | {statistics.median(s):.3f} | {len(s)} |" for name, s in rows]
    section = "\n".join([
        "## Extraction throughput (`extract_throughput.py`)", "",
        "Baseline: a plain per-batch loop (same ImageFolder, DataLoader, model and layer hooks) that copies logits and "
        "each layer's spatial mean and max to numpy lists; peekflow writes the same values to an HDF5 store.", "",
        *table, "",
        f"**peekflow overhead vs. the plain loop: {overhead:+.1f}%** (target < 15%).", "",
        f"Setup: {args.arch}, layers {', '.join(args.layers)}, N={args.n} images of {args.size}x{args.size} px, "
        f"batch size {args.batch_size}, {args.workers} DataLoader workers, device {device} ({dev}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} CPUs.", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("extract_throughput", section)


if __name__ == "__main__":
    main()

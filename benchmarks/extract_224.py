"""Extraction at ImageNet resolution (images/s): ResNet-50, 224 px, JPEGs of ImageNet's typical sizes; `peekflow
extract` against a plain torchvision ImageFolder + DataLoader loop; and the cost of each step per image.

Baseline: torchvision's `datasets.ImageFolder` with `Resize(256), CenterCrop(224), ToTensor(), Normalize` (the
classic evaluation transform), a `DataLoader` with the same batch size and workers, the same model with forward hooks
on the same layers; per batch the logits and each layer's spatial mean and max go to numpy lists (nothing written).
peekflow: `extract_features` in-process (what `peekflow extract` calls) with the model loaded as the CLI loads it
(`load_spec` on a torchvision state-dict file), writing a real HDF5 store; its values are checked against the
baseline's. Both at 0 and at W workers, repetitions interleaved, medians of CPU time (this process and its workers:
steady when other jobs share the cores) and of wall time. Then, image by image in one process: JPEG
decode, resize + crop, to-tensor + normalise, and the forward pass per image; and two faster decoders (PIL's JPEG draft
mode, torchvision.io.decode_jpeg): what they save and whether they change pixels.  Run: python
benchmarks/extract_224.py --help
"""

from __future__ import annotations

import argparse, os, platform, resource, statistics, tempfile, time
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.features.extract import ExtractSettings, extract_features
from peekflow.models.spec import ModelSpec, load_spec
from readme_section import command_line, write_section

CLASSES = [f"n{i:08d}" for i in range(10)]  # 10 wnid-like folders; the model has 1000 classes, these first
PREP = {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # the config's
# ImageNet's common shapes (most photos were stored at 500 px on the long side) and how often each is drawn here
SIZES = [((500, 375), 0.45), ((375, 500), 0.2), ((500, 333), 0.15), ((333, 500), 0.05), ((500, 500), 0.05),
         ((400, 300), 0.05), ((640, 480), 0.05)]


def photo(w: int, h: int, rng) -> Image.Image:
    """A smooth random colour field plus grain: JPEG sizes and decode times near real photos' (random noise would
    compress far worse, flat colour far better)."""
    low = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(img + rng.normal(0, 14, (h, w, 3)), 0, 255).astype(np.uint8))


def make_jpegs(root: Path, n: int, seed: int = 0, sizes=SIZES) -> None:
    rng = np.random.default_rng(seed)
    shapes, weights = zip(*sizes)
    for i in range(n):
        w, h = shapes[rng.choice(len(shapes), p=np.array(weights) / sum(weights))]
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        photo(w, h, rng).save(folder / f"{i:06d}.JPEG", quality=90)


def plain_loop(model, root, layers, batch_size, workers, device) -> dict:
    """The baseline: torchvision ImageFolder + DataLoader + transforms; hooks keep the layers' outputs."""
    import torchvision
    from torchvision import transforms as T

    transform = T.Compose([T.Resize(PREP["resize"]), T.CenterCrop(PREP["crop"]), T.ToTensor(),
                           T.Normalize(PREP["mean"], PREP["std"])])
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    modules, acts = dict(model.named_modules()), {}
    hooks = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: acts.__setitem__(name, out))
             for name in layers]
    kept = defaultdict(list)
    try:
        with torch.inference_mode():
            for images, labels in loader:
                kept["logits"].append(model(images.to(device, non_blocking=True)).cpu().numpy())
                kept["labels"].append(labels.numpy())
                for name in layers:
                    kept[f"features/{name}"].append(acts[name].mean(dim=(2, 3)).cpu().numpy())
                    kept[f"maxact/{name}"].append(acts[name].amax(dim=(2, 3)).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return {k: np.concatenate(v) for k, v in kept.items()}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, joined after each pass)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(): with one torch thread the CPU time is the work done, barely moved by other jobs
    on the cores, while the wall time is what a user waits (and grows with those jobs)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, cpu_seconds() - cpu


def step_costs(paths: list[Path], prep: Preprocessing) -> dict[str, float]:
    """Median CPU ms per image of each step of the preprocessing, done as peekflow does it (PIL)."""
    times = defaultdict(list)
    for path in paths:
        path.read_bytes()  # in the page cache, as after a first epoch
        t0 = time.process_time()
        with Image.open(path) as img:
            img = img.convert("RGB")  # decodes
        t1 = time.process_time()
        w, h = img.size
        size = (prep.resize, int(prep.resize * max(w, h) / min(w, h)))
        img = img.resize(size if w <= h else size[::-1], Image.BILINEAR)
        left, top = int(round((img.width - prep.crop) / 2.0)), int(round((img.height - prep.crop) / 2.0))
        img = img.crop((left, top, left + prep.crop, top + prep.crop))
        t2 = time.process_time()
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)
        x.sub_(torch.tensor(prep.mean).view(3, 1, 1)).div_(torch.tensor(prep.std).view(3, 1, 1))
        t3 = time.process_time()
        for step, dt in (("decode", t1 - t0), ("resize + crop", t2 - t1), ("to tensor + normalise", t3 - t2)):
            times[step].append(1e3 * dt)
    return {step: statistics.median(v) for step, v in times.items()}


def decoders(paths: list[Path], prep: Preprocessing) -> dict:
    """What the faster decoders give on these files: ms per image and whether the model input changes."""
    from torchvision.io import decode_jpeg, read_file

    out = defaultdict(list)
    for path in paths:
        with Image.open(path) as img:  # untimed: the first decode of a file also pays for reading and allocating
            img.convert("RGB")
        t0 = time.process_time()
        with Image.open(path) as img:
            exact = np.asarray(img.convert("RGB"))
        t1 = time.process_time()
        with Image.open(path) as img:
            img.draft("RGB", (prep.resize, prep.resize))  # scale 1/2, 1/4, 1/8 only while both sides stay >= resize
            drafted = img.convert("RGB")
        t2 = time.process_time()
        tv = decode_jpeg(read_file(str(path))).permute(1, 2, 0).numpy()
        t3 = time.process_time()
        out["pil"].append(t1 - t0)
        out["draft"].append(t2 - t1)
        out["torchvision"].append(t3 - t2)
        out["draft reduced"].append(drafted.size != exact.shape[1::-1])
        out["draft input diff"].append(float((prep.pixels(drafted) - prep.pixels(Image.fromarray(exact))).abs().max()))
        out["torchvision pixels equal"].append(np.array_equal(tv, exact))
    ms = {k: 1e3 * statistics.median(out[k]) for k in ("pil", "draft", "torchvision")}
    return {**ms, "n": len(paths), "draft reduced": sum(out["draft reduced"]),
            "draft input diff": max(out["draft input diff"]), "tv equal": sum(out["torchvision pixels equal"])}


def draft_effect(model, paths: list[Path], prep: Preprocessing, layer: str, device) -> dict[str, float]:
    """How much draft mode moves the model's outputs, relative to how far apart the images' outputs are."""
    def inputs(draft: bool):
        out = []
        for path in paths:
            with Image.open(path) as img:
                if draft:
                    img.draft("RGB", (prep.resize, prep.resize))
                out.append(prep(img.convert("RGB")))
        return torch.stack(out).to(device)

    acts = {}
    hook = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, o: acts.__setitem__("x", o))
    try:
        with torch.inference_mode():
            (exact, f_exact), (draft, f_draft) = [(model(inputs(d)), acts["x"].mean(dim=(2, 3))) for d in (0, 1)]
    finally:
        hook.remove()
    # the change per image against how much images differ from each other (distance to the mean image's output)
    rel = lambda a, b: float((a - b).norm(dim=1).mean() / (b - b.mean(0)).norm(dim=1).mean())
    return {"logits": rel(draft, exact), "features": rel(f_draft, f_exact)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=160, help="JPEGs (over 10 class folders)")
    p.add_argument("--layers", nargs="+", default=["layer3", "layer4"], help="as config/imagenet_resnet50.yaml")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers, each measured")
    p.add_argument("--threads", type=int, default=1, help="torch threads (torch.set_num_threads)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--reps", type=int, default=3, help="timed runs of each, interleaved, after a short warm-up")
    p.add_argument("--note", default="", help="a sentence on the machine's state, e.g. that other jobs shared it")
    p.add_argument("--write-readme", action="store_true", help="replace this benchmark's section in README.md")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tmp = tempfile.TemporaryDirectory(prefix="peekflow-bench224-")
    work = Path(tmp.name)
    images, warm, large = work / "images", work / "warm", work / "large"
    make_jpegs(images, args.n)
    make_jpegs(warm, args.batch_size, seed=1)
    make_jpegs(large, 20, seed=2, sizes=[((1024, 768), 1.0)])  # for draft mode, which acts only on large files
    files = sorted(images.rglob("*.JPEG"))
    kb = statistics.mean(f.stat().st_size for f in files) / 1e3
    mean_w, mean_h = (statistics.mean(s) for s in zip(*(Image.open(f).size for f in files)))

    import torchvision  # the checkpoint: a random-weight ResNet-50 saved as a plain state dict, like torchvision's

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), work / "resnet50.pth")
    classes = CLASSES + [f"filler{i:03d}" for i in range(1000 - len(CLASSES))]
    spec = ModelSpec(name="resnet50", arch="resnet50", num_classes=1000, preprocessing=PREP, classes=classes)
    model, classes = load_spec(spec, work / "resnet50.pth")
    model = model.to(device).eval()
    prep = spec.preprocess()
    attrs = {"model": "resnet50", "arch": "resnet50", "classes": classes, "dataset": "bench", "layers": args.layers,
             "preprocessing": prep.as_dict()}
    store = work / "features.h5"
    load = os.getloadavg()[0]

    def peekflow(root, workers):
        settings = ExtractSettings(layers=args.layers, batch_size=args.batch_size, num_workers=workers)
        return lambda: extract_features(model, root, classes, prep, settings, device, store, attrs)

    def plain(root, workers):
        return lambda: plain_loop(model, root, args.layers, args.batch_size, workers, device)

    runs = {(name, w): [] for w in args.workers for name in ("plain", "peekflow")}
    for name, w in runs:  # warm-up: one batch each
        (plain if name == "plain" else peekflow)(warm, w)()
    for rep in range(args.reps):
        for name, w in list(runs)[::1 if rep % 2 == 0 else -1]:  # order alternates between repetitions
            runs[name, w].append(timed((plain if name == "plain" else peekflow)(images, w)))
    kept = plain_loop(model, images, args.layers, args.batch_size, 0, device)  # same values: checked
    with h5py.File(store) as h5:
        for key, values in kept.items():
            np.testing.assert_allclose(h5[key][:], values, rtol=1e-5, atol=1e-5, err_msg=key)

    steps = step_costs(files, prep)
    batch = torch.stack([prep(Image.open(f).convert("RGB")) for f in files[:args.batch_size]]).to(device)
    with torch.inference_mode():
        forward = 1e3 * statistics.median(timed(lambda: model(batch))[1] for _ in range(3)) / len(batch)
    dec, dec_large = decoders(files, prep), decoders(sorted(large.rglob("*.JPEG")), prep)
    moved = draft_effect(model, sorted(large.rglob("*.JPEG")), prep, args.layers[-1], device)

    end_load = os.getloadavg()[0]
    wall = {key: statistics.median(t[0] for t in s) for key, s in runs.items()}
    cpu = {key: statistics.median(t[1] for t in s) for key, s in runs.items()}
    table = ["| DataLoader workers | run | CPU s per image | CPU time vs. plain loop | images/s, wall | wall time vs. "
             "plain loop | runs |", "|---:|---|---:|---:|---:|---:|---:|"]
    for (name, w), s in runs.items():
        vs = {k: f"{100 * (t[name, w] / t['plain', w] - 1):+.1f}%" if name == "peekflow" else "baseline"
              for k, t in (("cpu", cpu), ("wall", wall))}
        label = "plain torchvision loop" if name == "plain" else "peekflow `extract_features`"
        table.append(f"| {w} | {label} | {cpu[name, w] / args.n:.3f} | {vs['cpu']} | {args.n / wall[name, w]:.2f} | "
                     f"{vs['wall']} | {len(s)} |")
    prep_ms = sum(steps.values())
    step_rows = ["| step (one image, one process) | CPU ms per image (median) | share of decode + preprocessing + "
                 "forward |",
                 "|---|---:|---:|"]
    for step, ms in [*steps.items(), (f"forward pass ({device.type}, batch {args.batch_size}, per image)", forward)]:
        step_rows.append(f"| {step} | {ms:.2f} | {100 * ms / (prep_ms + forward):.1f}% |")
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    slow = {w: 100 * (cpu["peekflow", w] / cpu["plain", w] - 1) for w in args.workers}
    section = "\n".join([
        "## Extraction at 224 px, ResNet-50 (`extract_224.py`)", "",
        "Baseline: a plain torchvision loop (`datasets.ImageFolder` with `Resize(256), CenterCrop(224), ToTensor(), "
        "Normalize`, a `DataLoader` with the same batch size and workers, the same model and layer hooks) copying the "
        "logits and each layer's spatial mean and max to numpy lists; peekflow's `extract_features` (what `peekflow "
        "extract` runs) writes the same values to an HDF5 store (checked equal). Interleaved repetitions, medians.", "",
        *table, "",
        "**peekflow's CPU time against the plain loop's: " + ", ".join(f"{s:+.1f}% at {w} workers" for w, s in
        slow.items()) + "** (goal: within 5%). CPU time counts this process and its DataLoader workers; with one "
        "torch thread it is the work done, which other jobs on the cores barely move, whereas wall time grows with "
        "them.", "",
        *step_rows, "",
        f"Decoding + preprocessing cost {prep_ms:.1f} ms per image against {forward:.0f} ms for the forward pass on "
        f"{device.type}: " + ("decoding does not dominate here, and workers hide it." if prep_ms < forward else
                               "decoding dominates here."), "",
        f"Faster decoders, CPU ms per image (median): PIL {dec['pil']:.2f}, PIL draft mode {dec['draft']:.2f}, "
        f"torchvision.io.decode_jpeg {dec['torchvision']:.2f}. Draft mode (`Image.draft('RGB', (256, 256))`) scales "
        f"by 1/2, 1/4 or 1/8 in the decoder only while both sides stay >= 256 px, so it reduced "
        f"{dec['draft reduced']} of these {dec['n']} typical-size files (pixels identical) and "
        f"{dec_large['draft reduced']} of {dec_large['n']} 1024x768 files, which it decodes in "
        f"{dec_large['draft']:.2f} ms instead of {dec_large['pil']:.2f} ms but whose model input then differs by up "
        f"to {dec_large['draft input diff']:.3f} (pixel values in [0, 1]); it moves an image's logits by "
        f"{moved['logits']:.1%} and its pooled {args.layers[-1]} features by {moved['features']:.1%} of the mean "
        f"distance between an image's and the mean image's (L2 norms, the 20 files; synthetic grain and random "
        f"weights, so no prediction for a trained model on photos, only proof that it is not the same store). "
        f"decode_jpeg gave PIL's pixels exactly for "
        f"{dec['tv equal']} of {dec['n']} files.", "",
        f"Setup: random-weight torchvision resnet50 (1000 classes) loaded from a state-dict file as `peekflow extract` "
        f"loads it; layers {', '.join(args.layers)} (config/imagenet_resnet50.yaml); {args.n} seeded JPEGs (quality "
        f"90, 10 class folders) of ImageNet's common shapes ({', '.join(f'{w}x{h}' for (w, h), _ in SIZES)}), mean "
        f"{mean_w:.0f}x{mean_h:.0f} px and {kb:.0f} kB per file; batch size {args.batch_size}; device {device} "
        f"({dev}), torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} torch "
        f"thread(s) of {os.cpu_count()} CPUs; 1-min load average {load:.1f} at the start, "
        f"{end_load:.1f} at the end. {args.note}".rstrip(), "",
        *([f"The load average exceeded the {os.cpu_count()} CPUs, so the wall-time ratios say more about the other "
           "jobs than about the code; the CPU-time ratios are the figures.", ""] if max(load, end_load) >
          (os.cpu_count() or 1) else []),
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("extract_224", section)


if __name__ == "__main__":
    main()

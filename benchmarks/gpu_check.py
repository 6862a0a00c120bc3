"""GPU check: peekflow's CUDA paths against its CPU path (correctness) and against bare-GPU baselines (speed).

1. extract    `extract_features` (what `peekflow extract` calls) on CUDA in fp32 and with amp (fp16 autocast) against
              the CPU path on the same generated shape images: max abs / relative difference of logits and pooled
              features, share of equal argmax; small_resnet at 64 px and torchvision resnet50 at 224 px (random
              weights, batch-norm statistics calibrated on the images so that activations have realistic scales);
              fp32 also with TF32 convolutions on (PyTorch's default, which peekflow turns off), to show their rounding;
              amp also with `extract.channels_last`.
2. speed      `extract_dataset` over preprocessed images held in memory against the model's bare forward on the same
              batches already on the GPU (goal >= 90%): extraction's steady-state rate (a run of n images minus one of
              n/2, so a call's fixed set-up cost is not spread over these few images); amp also with channels_last;
              the bare forward in channels-last too.
3. prototypes `make_deepinversion` (amp = bf16 where supported, fp16 + GradScaler forced, fp32; amp also in NCHW
              against render's default channels-last) and `make_deepdream` (Fourier, log-probability; fp32, amp)
              on CUDA: prototypes/s, target accuracy (`prototypes.quality`), finite losses. No jitter / flip: a
              random-weight model is not shift-invariant, so images optimised under jitter do not carry the target
              to the plain image (they do for trained models).
4. knn        `KNN.fit/score` with the torch backend on CUDA and faiss on the GPU (if faiss has GPU support) against
              exact float64 scores (numpy brute force on a subset); scoring time against a plain `queries @ bank.T`
              of the same shape and dtype (bank in blocks), goal >= 80%.
5. odin       `ODIN.score_images` on CUDA against the CPU.
6. decode     extraction from JPEG files (4:3 photos-sized, resize + centre crop) with `extract.decode: pil` (PIL in
              --workers loader processes) and `torchvision` (nvjpeg on CUDA; the CPU decoder without CUDA): the
              stores' difference (the kernels differ), each decoder's bare throughput, extraction's rate against
              min(bare forward, decoder) (goal >= 90%) and the GPU decoder's images/s (goal > 5,000 on one H100).
Without CUDA every CUDA part is skipped (and says so); the CPU-side checks run at the --quick size. Not covered:
the device paths of training, patches, DORA, caricatures and emergence.
Tolerances: TOL below; "rel" = max|cuda - cpu| / max|cpu|. A failed correctness check gives exit status 1; speed
goals are reported, not asserted. faiss and torchvision are optional (their parts are skipped when absent).
Run: PYTHONPATH=src python3 benchmarks/gpu_check.py --json gpu_check.json [--quick]
     python benchmarks/gpu_check.py --from-json gpu_check.json --write-readme
"""

from __future__ import annotations

import argparse, contextlib, json, logging, os, platform, statistics, sys, tempfile, time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))  # readme_section, also when run via runpy
from peekflow.data.folder import ImageFolder, Preprocessing
from peekflow.data.generate import GenerateSettings, generate_dataset
from peekflow.data.shapes import DEFAULT_ID_SHAPES
from peekflow.device import resolve_device
from peekflow.features.extract import ExtractSettings, extract_dataset, extract_features
from peekflow.features.store import FeatureSet
from peekflow.models.registry import build_model
from peekflow.ood.knn import KNN
from peekflow.ood.neighbours import normalise_rows_
from peekflow.ood.odin import ODIN
from peekflow.prototypes.deepdream import DreamSettings, make_deepdream
from peekflow.prototypes.deepinversion import InversionSettings, make_deepinversion
from peekflow.prototypes.quality import accuracy_and_confidence, predict
from readme_section import README, command_line, write_section

NAME, GPU_MARK = "gpu_check", "<!-- gpu_check: figures measured on a GPU -->"
TOL = {
    "rel fp32": 1e-3,  # CUDA fp32 vs CPU: peekflow.device turns PyTorch's default TF32 convolutions off
    "rel fp32 TF32": 5e-2,  # with TF32 switched back on for the run (PyTorch's default; 10-bit mantissa)
    "rel amp": 1e-1,  # fp16 autocast vs CPU fp32
    # same arg-max as on the CPU, among the images whose CPU top-2 logit margin exceeds 2x the max logit difference
    # (a random-weight model's margins are tiny: the plain share of equal arg-max is reported, not asserted)
    "argmax decided": 1.0,
    "store vs forward": 1e-5,  # CPU: the store's logits vs the model's plain forward (rel)
    "knn abs": 1e-4,  # |score - exact float64 score|; unit vectors, so distances lie in [0, 2]
    "target accuracy": 0.9,  # prototypes classified as their target
    "odin": 5e-2,  # max |cuda - cpu| / range of the CPU scores
    "decode rel": 0.1,  # torchvision vs PIL decoding: antialiased resize kernels differ (a few levels of 255)
}
SIZES = {  # per_class x 10 shapes at px; r50: per class at 224 px (0 = skipped)
    "full": dict(per_class=100, px=64, r50_per_class=25, speed_n=16384, speed_r50=4096, batch=256, reps=3,
                 di_n=128, di_steps=200, r50_n=64, r50_steps=100, dd_per_class=4, dd_steps=200,
                 bank=1_000_000, dim=512, queries=16384, k=50, exact=256, decode_n=4096),
    "quick": dict(per_class=4, px=32, r50_per_class=0, speed_n=0, speed_r50=0, batch=16, reps=1,
                  di_n=4, di_steps=3, r50_n=0, r50_steps=0, dd_per_class=1, dd_steps=3,
                  bank=20_000, dim=128, queries=400, k=10, exact=400, decode_n=24),
}
PREP = dict(mean=[0.5] * 3, std=[0.25] * 3)


class Report(dict):
    """Every figure of the run; `check` (asserted, tolerance stated) and `speed` (a ratio, reported) print a line."""

    def __init__(self, **meta):
        super().__init__(meta=meta, checks=[], speed=[], skipped=[], figures={})

    def check(self, part, name, value, op, bound):
        ok = bool(value <= bound if op == "<=" else value >= bound)
        self["checks"].append(dict(part=part, name=name, value=float(value), op=op, bound=bound, passed=ok))
        print(f"  [{'PASS' if ok else 'FAIL'}] {part}: {name} = {value:.3g} (tolerance {op} {bound:g})", flush=True)

    def speed(self, part, name, ratio, goal=None, detail=""):
        self["speed"].append(dict(part=part, name=name, ratio=float(ratio), goal=goal, detail=detail))
        verdict = "" if goal is None else f", goal >= {goal:.0%}: {'met' if ratio >= goal else 'NOT met'}"
        print(f"  [SPEED] {part}: {name} = {ratio:.2f}{verdict} ({detail})", flush=True)

    def skip(self, part, why):
        self["skipped"].append(f"{part}: {why}")
        print(f"  [SKIP] {part}: {why}", flush=True)


def seconds(fn):
    """(wall seconds, fn()) with CUDA synchronised on both ends."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def calibrated(arch, num_classes, images: torch.Tensor, device):
    """A random-weight model whose batch norms hold the statistics of `images` (realistic activation scales)."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes).to(device)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    with torch.no_grad():
        model.train()(images.to(device))
    return model.eval()


def extract(model, root, classes, prep, layers, device, amp, out, batch, channels_last=False):
    s = ExtractSettings(layers=layers, batch_size=batch, amp=amp, channels_last=channels_last)
    took, _ = seconds(lambda: extract_features(model, root, classes, prep, s, device, out, {"model": "gpu_check"}))
    keys = ["logits", *(f"{group}/{layer}" for group in ("features", "maxact") for layer in layers)]
    with h5py.File(out) as h5:
        return {key: h5[key][:] for key in keys}, took


@contextlib.contextmanager
def tf32_on():
    """TF32 convolutions inside the block (PyTorch's default, which peekflow.device.resolve_device turns off): the
    flags are restored after it."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = old


def argmax_agreement(got, ref):
    """(share of equal arg-max, the same among decided images, share decided); decided: CPU top-2 margin > 2x the
    max logit difference, where no rounding can swap the top two."""
    top2, same = np.sort(ref, 1)[:, -2:], got.argmax(1) == ref.argmax(1)
    decided = top2[:, 1] - top2[:, 0] > 2 * np.abs(got - ref).max()
    return float(same.mean()), float(same[decided].mean()) if decided.any() else 1.0, float(decided.mean())


def extract_part(rep, name, model, root, classes, prep, layers, x, cuda, tmp, sz):
    """CPU store vs plain forward, then CUDA fp32 (peekflow's default: TF32 off; and with TF32 on) / amp stores vs
    the CPU store."""
    cpu = torch.device("cpu")
    ref, _ = extract(model, root, classes, prep, layers, cpu, False, tmp / f"{name}-cpu.h5", sz["batch"])
    with torch.inference_mode():
        plain = torch.cat([model.to(cpu)(b) for b in x.split(sz["batch"])]).numpy()
    rep.check("extract", f"{name} CPU store logits vs plain forward (rel)", rel(ref["logits"], plain), "<=",
              TOL["store vs forward"])
    if not cuda:
        return rep.skip("extract", f"{name}: CUDA fp32/amp vs CPU (no CUDA)")
    for mode in ("fp32", "fp32 TF32", "amp", "amp channels_last"):
        with tf32_on() if mode == "fp32 TF32" else contextlib.nullcontext():
            got, took = extract(model, root, classes, prep, layers, torch.device("cuda"), mode.startswith("amp"),
                                tmp / f"{name}-{mode}.h5", sz["batch"], channels_last=mode.endswith("channels_last"))
        diffs = {k: dict(abs=float(np.abs(got[k] - v).max()), rel=rel(got[k], v)) for k, v in ref.items()}
        same, decided_same, decided = argmax_agreement(got["logits"], ref["logits"])
        rep["figures"][f"extract {name} {mode}"] = dict(diffs=diffs, argmax_equal=same, seconds=took, n=len(plain),
                                                       argmax_equal_decided=decided_same, decided=decided)
        worst = max((k for k in diffs if k != "logits"), key=lambda k: diffs[k]["rel"])
        print(f"    {name} {mode}: logits max abs {diffs['logits']['abs']:.3g}; equal argmax {same:.1%} of all, "
              f"{decided_same:.1%} of the {decided:.0%} decided; worst features {worst}")
        tol = TOL[f"rel {mode.split(' channels_last')[0]}"]
        rep.check("extract", f"{name} {mode} logits (rel)", diffs["logits"]["rel"], "<=", tol)
        rep.check("extract", f"{name} {mode} {worst} (rel)", diffs[worst]["rel"], "<=", tol)
        rep.check("extract", f"{name} {mode} equal argmax, decided images", decided_same, ">=", TOL["argmax decided"])


def speed_part(rep, name, model, x, layers, n, tmp, sz):
    """extract_dataset over images in memory (0 and --workers DataLoader workers; with amp also channels-last) vs the
    bare forward of the same batches already on the GPU, interleaved; the bare forward in channels-last too.
    Extraction's rate is its steady state: the images of a run of n minus those of a run of n/2, over the difference
    of their times. A call's fixed cost (store and loader set-up, worker start, the first batch's last-layer check,
    filling and draining the overlap of GPU and host), paid once per store of 10^4-10^6 images, is thus not spread
    over these few thousand; the whole call's rate is in the detail."""
    cuda, batch = torch.device("cuda"), sz["batch"]
    half = max(batch, n // 2 // batch * batch)
    items = [(x[i % len(x)], 0, "") for i in range(n)]
    batches = [torch.stack([x[i % len(x)] for i in range(s, min(s + batch, n))]).to(cuda) for s in range(0, n, batch)]
    model = model.to(cuda)

    def bare(amp, cl=False):
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=amp):
            for b in batches:
                model(b.contiguous(memory_format=torch.channels_last) if cl else b)

    def extract(m, workers, amp, cl):
        s = ExtractSettings(layers=layers, batch_size=batch, num_workers=workers, amp=amp, channels_last=cl)
        return lambda: extract_dataset(model, items[:m], s, cuda, tmp / f"speed-{name}.h5", {"model": name},
                                       source="memory")

    for amp in (False, True):
        mode = "amp" if amp else "fp32"
        kinds = [(w, False) for w in sorted({0, sz["workers"]})] + ([(0, True)] if amp else [])
        runs = {(w, cl, m): extract(m, w, amp, cl) for w, cl in kinds for m in (half, n)}
        runs["bare"] = lambda: bare(amp)
        times = {key: [] for key in runs}
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(sz["reps"]):
            for key, fn in runs.items():
                times[key].append(seconds(fn)[0])
        fwd = statistics.median(times.pop("bare"))
        for workers, cl in kinds:
            whole, part = statistics.median(times[workers, cl, n]), statistics.median(times[workers, cl, half])
            steady = (n - half) / max(whole - part, 1e-9)
            how = f"{workers} workers" + (", channels_last" if cl else "")
            rep.speed("speed", f"{name} {mode}: extract_dataset ({how}) vs bare forward{' NCHW' if cl else ''} "
                      "(steady-state throughput)", steady * fwd / n, None if cl else 0.9,
                      f"{steady:.0f} vs {n / fwd:.0f} images/s, batch {batch}; whole call of {n}: {n / whole:.0f}/s")
        model.to(memory_format=torch.channels_last)
        bare(amp, True)
        cl = statistics.median(seconds(lambda: bare(amp, True))[0] for _ in range(sz["reps"]))
        model.to(memory_format=torch.contiguous_format)
        rep.speed("speed", f"{name} {mode}: bare forward channels-last vs NCHW (speed-up)", fwd / cl, None,
                  f"{n / cl:.0f} vs {n / fwd:.0f} images/s")


def proto_part(rep, name, model, classes, prep, size, cuda, sz, warned):
    """DeepInversion (fp32, amp, forced fp16, amp in NCHW) and DeepDream (fp32, amp): rate, target accuracy,
    finite losses."""
    device = "cuda" if cuda else "cpu"
    n, steps = (sz["r50_n"], sz["r50_steps"]) if name == "resnet50" else (sz["di_n"], sz["di_steps"])
    runs = [("deepinversion", "fp32"), ("deepinversion", "amp"), ("deepinversion", "fp16"),
            ("deepinversion", "amp NCHW"), ("deepdream", "fp32"), ("deepdream", "amp")]
    rates = {}
    for method, mode in [r for r in runs if (cuda or r[1] == "fp32") and (name != "resnet50" or r[0] != "deepdream")]:
        common = dict(batch_size=64, size=size, amp=mode != "fp32", channels_last=mode != "amp NCHW")
        if method == "deepinversion":
            s = InversionSettings(n=n, steps=steps, jitter=0, flip=False, **common)
            make, warm = make_deepinversion, replace(s, n=min(n, 64), steps=2)
        else:
            s = DreamSettings(per_class=sz["dd_per_class"], steps=sz["dd_steps"], param="fourier",
                              target_loss="log_softmax", **common)
            make, warm = make_deepdream, replace(s, steps=2)
        fp16 = mock.patch("torch.cuda.is_bf16_supported", return_value=False) if mode == "fp16" else None
        with fp16 or contextlib.nullcontext():
            make(model, classes, prep, warm, device=device)
            warned.clear()
            took, protos = seconds(lambda: make(model, classes, prep, s, device=device))
        label = f"{name} {method} {mode} ({protos.settings['render']['precision']}) on {device}"
        bad = int((~np.isfinite(protos.losses)).sum()) + len(warned)
        acc, conf = accuracy_and_confidence(predict(model, protos.images, prep, device), protos.targets)
        rates[(method, mode)] = len(protos.targets) / took
        rep["figures"][f"prototypes {label}"] = dict(n=len(protos.targets), steps=s.steps, seconds=took,
                                                    per_s=rates[(method, mode)], target_accuracy=acc, confidence=conf)
        print(f"    {label}: {rates[(method, mode)]:.1f} prototypes/s, target accuracy {acc:.0%} (p {conf:.2f})")
        rep.check("prototypes", f"{label}: non-finite losses", bad, "<=", 0)
        if cuda:  # the few --quick steps on the CPU do not reach the target
            rep.check("prototypes", f"{label}: target accuracy", acc, ">=", TOL["target accuracy"])
    if not cuda:
        return rep.skip("prototypes", f"{name}: DeepInversion / DeepDream on CUDA, amp vs fp32 (no CUDA)")
    for method, mode, other in [(m, *pair) for m in ("deepinversion", "deepdream")
                                for pair in (("amp", "fp32"), ("fp16", "fp32"), ("amp", "amp NCHW"))]:
        if (method, mode) in rates and (method, other) in rates:  # amp vs amp NCHW: what channels-last gains
            rep.speed("prototypes", f"{name} {method} {mode} vs {other} (speed-up)", rates[method, mode] /
                      rates[method, other], None, f"{rates[method, mode]:.1f} vs {rates[method, other]:.1f}/s")


def unit_rows(n, d, seed):
    return normalise_rows_(np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32))


def exact_scores(bank, q, k, block=32768):
    """-(distance to the k-th nearest bank row), float64 brute force."""
    q = q.astype(np.float64)
    qq, best = (q * q).sum(1)[:, None], np.empty((len(q), 0))
    for s in range(0, len(bank), block):
        b = bank[s:s + block].astype(np.float64)
        d = np.hstack([best, qq + (b * b).sum(1) - 2 * q @ b.T])
        best = np.partition(d, min(k, d.shape[1]) - 1, axis=1)[:, :k]
    return -np.sqrt(np.maximum(np.sort(best, axis=1)[:, k - 1], 0))


def feature_set(x):
    return FeatureSet("gpu_check", np.zeros((len(x), 1), np.float32), x, np.full(len(x), -1), [""] * len(x))


def write_jpegs(root, classes, n, px, seed=0):
    """n 4:3 JPEGs (quality 90) of shapes-like noise around the crop size `px`, spread over the class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = px * 9 // 4, px * 27 // 16  # 224 px crop: 504 x 378, the size of a typical ImageNet photo
    for i in range(n):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)  # smooth blocks: JPEG-like content
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        img.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def decode_part(rep, name, model, classes, px, layers, cuda, tmp, sz):
    """Extraction from JPEG files, PIL (loader workers) vs torchvision (nvjpeg on CUDA) decoding: stores compared,
    each decoder alone, extraction against min(bare forward, decoder)."""
    from peekflow.data.decode import EncodedFolder, collate_encoded, decode_on_device

    device = torch.device("cuda" if cuda else "cpu")
    root = write_jpegs(tmp / f"{name}-jpeg", classes, sz["decode_n"], px)
    prep = Preprocessing(resize=px * 8 // 7, crop=px, **PREP)
    batch, workers = sz["batch"], sz["workers"]
    stores, rates = {}, {}
    for decode in ("pil", "torchvision"):
        s = ExtractSettings(layers=layers, batch_size=batch, amp=cuda, channels_last=cuda,
                            num_workers=workers if decode == "pil" else 0, decode=decode)
        out = tmp / f"{name}-{decode}.h5"
        took, _ = seconds(lambda: extract_features(model, root, classes, prep, s, device, out, {"model": name}))
        with h5py.File(out) as h5:
            stores[decode] = {key: h5[key][:] for key in ["logits", *(f"features/{k}" for k in layers)]}
        rates[f"extract {decode}"] = sz["decode_n"] / took
    diffs = {k: rel(stores["torchvision"][k], v) for k, v in stores["pil"].items()}
    worst = max(diffs, key=diffs.get)
    rep["figures"][f"decode {name}"] = dict(rel=diffs, n=sz["decode_n"])
    rep.check("decode", f"{name} torchvision vs PIL decoding, {worst} (rel)", diffs[worst], "<=", TOL["decode rel"])
    if not cuda:
        return rep.skip("decode", f"{name}: nvjpeg and extraction speed (no CUDA)")
    pil_loader = torch.utils.data.DataLoader(ImageFolder(root, classes, prep), batch_size=batch, num_workers=workers)
    rates["PIL decoder"] = sz["decode_n"] / seconds(lambda: [None for _ in pil_loader])[0]
    tv_loader = torch.utils.data.DataLoader(EncodedFolder(root, classes, prep), batch_size=batch,
                                            collate_fn=collate_encoded)
    rates["GPU decoder"] = sz["decode_n"] / seconds(
        lambda: [torch.cuda.synchronize() for _ in decode_on_device(tv_loader, device, prep)])[0]
    x = torch.randn(batch, 3, px, px, device=device).contiguous(memory_format=torch.channels_last)
    model = model.to(device).to(memory_format=torch.channels_last)

    def bare():
        with torch.inference_mode(), torch.autocast("cuda", torch.float16):
            for _ in range(-(-sz["decode_n"] // batch)):
                model(x)
        torch.cuda.synchronize()

    bare()
    rates["bare forward"] = sz["decode_n"] / seconds(bare)[0]
    model.to(memory_format=torch.contiguous_format)
    rep["figures"][f"decode {name}"]["images_per_s"] = rates
    for decode, decoder in (("pil", "PIL decoder"), ("torchvision", "GPU decoder")):
        bound = min(rates["bare forward"], rates[decoder])
        rep.speed("decode", f"{name} amp: extraction from JPEGs ({decode}) vs min(bare forward, {decoder})",
                  rates[f"extract {decode}"] / bound, 0.9, f"{rates[f'extract {decode}']:.0f} images/s; bare "
                  f"forward {rates['bare forward']:.0f}/s, {decoder} {rates[decoder]:.0f}/s, batch {batch}")
    rep.speed("decode", f"{name}: GPU decoder vs 5,000 images/s", rates["GPU decoder"] / 5000, 1.0,
              f"{rates['GPU decoder']:.0f} images/s of {prep.crop} px crops from {sz['decode_n']} JPEGs")


def knn_part(rep, cuda, sz):
    bank, queries, k = unit_rows(sz["bank"], sz["dim"], 0), unit_rows(sz["queries"], sz["dim"], 1), sz["k"]
    exact = exact_scores(bank, queries[:sz["exact"]], k)
    backends = ["torch"]
    try:
        import faiss
    except ImportError:
        rep.skip("knn", "faiss is not installed: faiss (GPU) not checked")
    else:
        if faiss.get_num_gpus() > 0 or not cuda:
            backends.append("faiss")
        else:
            rep.skip("knn", "faiss has no GPU support here (faiss.get_num_gpus() == 0): faiss-GPU not checked")
    for backend in backends:
        knn = KNN(k=k, backend=backend).fit(feature_set(bank))
        where = knn._search.where
        got = knn.score(feature_set(queries[:sz["exact"]]))
        label = f"{backend} backend on {where}, bank {sz['bank']:,} x {sz['dim']}, k {k}"
        rep.check("knn", f"{label}: max |score - float64 exact| ({len(exact)} queries)", np.abs(got - exact).max(),
                  "<=", TOL["knn abs"])
        if where != "CPU":
            knn_roofline(rep, knn, label, bank, queries, sz)
    if not cuda:
        rep.skip("knn", "torch backend on CUDA, faiss on the GPU, throughput vs matmul (no CUDA)")


def knn_roofline(rep, knn, label, bank, queries, sz):
    qg, bg = torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda()

    def matmul():
        for s in range(0, len(bg), 16384):
            torch.mm(qg, bg[s:s + 16384].T)

    score = lambda: knn.score(feature_set(queries))
    score(), matmul()  # warm-up
    t_knn = statistics.median(seconds(score)[0] for _ in range(sz["reps"]))
    t_mm = statistics.median(seconds(matmul)[0] for _ in range(sz["reps"]))
    rep.speed("knn", f"{label}: queries @ bank.T time / KNN.score time", t_mm / t_knn, 0.8,
              f"{len(queries) / t_knn:,.0f} vs {len(queries) / t_mm:,.0f} queries/s, fp32")
    del qg, bg


def odin_part(rep, model, root, prep, cuda):
    if not cuda:
        return rep.skip("odin", "ODIN on CUDA vs CPU (no CUDA)")
    det = ODIN()
    cpu = det.score_images(model, root, prep, torch.device("cpu"))
    gpu = det.score_images(model, root, prep, torch.device("cuda"))
    spread = float(cpu.max() - cpu.min()) or 1.0
    rep["figures"]["odin"] = dict(max_abs=float(np.abs(gpu - cpu).max()), cpu_range=spread, n=len(cpu))
    rep.check("odin", "small_resnet max |cuda - cpu| / range of CPU scores", np.abs(gpu - cpu).max() / spread, "<=",
              TOL["odin"])


def measure(args) -> Report:
    started, cuda = time.perf_counter(), torch.cuda.is_available()
    if cuda:
        resolve_device("cuda")  # what every peekflow command does first: float32 without TF32
    quick = args.quick or not cuda
    sz = dict(SIZES["quick" if quick else "full"], workers=args.workers)
    if quick:
        torch.set_num_threads(1)
    rep = Report(cuda=cuda, quick=quick, sizes=sz, tolerances=TOL, torch=torch.__version__, cpus=os.cpu_count(),
                 python=platform.python_version(), threads=torch.get_num_threads(), command=command_line(),
                 device=torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})",
                 tf32={"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32})
    print(f"GPU check on {rep['meta']['device']}, torch {torch.__version__}, {'quick' if quick else 'full'} sizes"
          + ("" if cuda else ": NO CUDA -- every CUDA part is skipped, only the CPU-side checks run"), flush=True)
    warned = []  # render's "loss became non-finite" warnings
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: warned.append(r.getMessage()) if "non-finite" in r.getMessage() else None
    logging.getLogger("peekflow").addHandler(handler)
    device = torch.device("cuda" if cuda else "cpu")
    with tempfile.TemporaryDirectory(prefix="peekflow-gpu-check-") as tmp:
        tmp, classes = Path(tmp), list(DEFAULT_ID_SHAPES)
        models = [("small_resnet", sz["per_class"], sz["px"], ["layer1", "layer2", "layer3", "layer4"], sz["speed_n"])]
        models.append(("resnet50", sz["r50_per_class"], 224, ["layer3", "layer4"], sz["speed_r50"]))
        for name, per_class, px, layers, speed_n in models:
            print(f"\n== {name} at {px} px", flush=True)
            if not per_class:
                rep.skip("extract", f"{name}: not run at the --quick size")
                continue
            try:
                build_model(name, 2)
            except ImportError as err:
                rep.skip("extract", f"{name}: {err}")
                continue
            root, prep = tmp / name, Preprocessing(crop=px if name == "resnet50" else None, **PREP)
            generate_dataset(root, "shapes", GenerateSettings(0, {"val": per_class}, px, classes), 1 if quick else None)
            root = root / "val"
            x = torch.stack([item[0] for item in ImageFolder(root, classes, prep)])
            num = 1000 if name == "resnet50" else len(classes)
            model = calibrated(name, num, x[:64], device)
            extract_part(rep, name, model, root, classes, prep, layers, x, cuda, tmp, sz)
            if cuda and speed_n:
                speed_part(rep, name, model, x, layers, speed_n, tmp, sz)
            proto_classes = [f"class{i}" for i in range(num)]
            proto_part(rep, name, model.to(device), proto_classes, prep, px, cuda, sz, warned)
            if name == "small_resnet":
                odin_part(rep, model, root, prep, cuda)
            if name == "resnet50" or quick:
                decode_part(rep, name, model, classes, px, layers, cuda, tmp, sz)
        print("\n== knn", flush=True)
        knn_part(rep, cuda, sz)
    logging.getLogger("peekflow").removeHandler(handler)
    rep["meta"]["seconds"] = round(time.perf_counter() - started)
    print(f"\nthe run took {rep['meta']['seconds'] / 60:.1f} minutes", flush=True)
    return rep


def cell(text: str) -> str:
    return text.replace("|", "\\|")  # a table cell's own bars


def render_section(rep) -> str:
    meta = rep["meta"]
    lines = ["## GPU check (`gpu_check.py`)", ""]
    if not meta["cuda"]:
        return "\n".join(lines + [
            "**Not yet run on a GPU.** On CUDA it checks peekflow's CUDA paths of feature extraction (fp32, fp32 "
            "with TF32, amp; small_resnet 64 px, resnet50 224 px), DeepInversion (fp32, bf16 and fp16 amp) and "
            "DeepDream prototypes, KNN scoring (torch on CUDA; faiss on the GPU where installed) and ODIN against "
            "the CPU path or exact float64 scores, each with a stated tolerance (pass/fail), and measures "
            "extraction against the bare forward (goal >= 90%), channels-last, prototypes/s (amp vs fp32, "
            "channels-last vs NCHW) and KNN scoring against a `queries @ bank.T` matmul (goal >= 80%). Run it "
            "with `PYTHONPATH=src python3 benchmarks/gpu_check.py --json gpu_check.json`, then record the figures "
            "with `python benchmarks/gpu_check.py --from-json gpu_check.json --write-readme`.", "",
            f"CPU-side checks on {meta['device']}: {sum(c['passed'] for c in rep['checks'])} of "
            f"{len(rep['checks'])} passed.", "", meta["command"]])
    checks = ["| part | check | value | tolerance | result |", "|---|---|---:|---:|---|"]
    checks += [f"| {c['part']} | {cell(c['name'])} | {c['value']:.3g} | {c['op']} {c['bound']:g} | "
               f"{'pass' if c['passed'] else '**FAIL**'} |" for c in rep["checks"]]
    def goal(s):
        met = s["goal"] is not None and s["ratio"] >= s["goal"]
        return "-" if s["goal"] is None else f">= {s['goal']:.0%} " + ("met" if met else "**not met**")

    speed = ["| part | measure | ratio | goal | detail |", "|---|---|---:|---:|---|"]
    speed += [f"| {s['part']} | {cell(s['name'])} | {s['ratio']:.2f} | {goal(s)} | {s['detail']} |"
              for s in rep["speed"]]
    failed = sum(not c["passed"] for c in rep["checks"])
    return "\n".join(lines + [
        GPU_MARK, "", f"**{len(rep['checks']) - failed} of {len(rep['checks'])} correctness checks passed.** "
        "rel = max|cuda - cpu| / max|cpu|.", "", *checks, "",
        "Speed (ratios in the same run; extraction at its steady state: a run of n images minus one of n/2, so a "
        "call's fixed set-up cost is not spread over the few images measured):", "", *speed, "",
        *(["Skipped: " + "; ".join(rep["skipped"]) + ".", ""] if rep["skipped"] else []),
        f"Setup: {meta['device']}, torch {meta['torch']}, Python {meta['python']}, {meta['cpus']} CPUs, TF32 "
        f"{meta['tf32']}, {'quick' if meta['quick'] else 'full'} sizes {meta['sizes']}"
        + (f"; the run took {meta['seconds'] / 60:.1f} minutes." if "seconds" in meta else "."), "", meta["command"]])


def may_write(readme_text: str, rep) -> bool:
    """A section without GPU figures never replaces one with them."""
    start, end = f"<!-- {NAME}:start -->", f"<!-- {NAME}:end -->"
    old = readme_text.split(start, 1)[1].split(end, 1)[0] if start in readme_text else ""
    return rep["meta"]["cuda"] or GPU_MARK not in old


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (always so without CUDA)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the speed part's second run "
                   "(batches pass through /dev/shm: lower it where that is small)")
    p.add_argument("--json", help="write every measured figure to this JSON file")
    p.add_argument("--from-json", help="render the README section from a saved --json file; measure nothing")
    p.add_argument("--write-readme", action="store_true", help=f"replace this check's section in {README.name}")
    args = p.parse_args()
    rep = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(args)
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    failed = [c for c in rep["checks"] if not c["passed"]]
    print(f"\n{len(rep['checks']) - len(failed)} of {len(rep['checks'])} correctness checks passed"
          + "".join(f"\n  FAILED {c['part']}: {c['name']} = {c['value']:.3g}" for c in failed)
          + "".join(f"\n  skipped {s}" for s in rep["skipped"]))
    if args.write_readme:
        if may_write(README.read_text() if README.exists() else "", rep):
            write_section(NAME, render_section(rep))
        else:
            print(f"kept the GPU figures in {README}: this run had no CUDA")
    sys.exit(1 if failed and not args.from_json else 0)


if __name__ == "__main__":
    main()

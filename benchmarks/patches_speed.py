"""Patch search: map mode against the sliding-window original (window mode), speed and agreement on the best image.

Runs on the embedded default's outputs (the target model, its ID-train feature store, the images under resources/;
run the workflow first). Per layer: top-N from the store, then `find_patches` in map and in window mode (what
`peekflow patches` calls) on the same channels and top-N images. Baseline: window mode. Figures: seconds per layer
(median of --reps, interleaved), speed-up = window / map, and the share of channels whose best patch comes from the
same image in both modes (also the mean overlap of the two top-k image sets). Windows default to the layer's receptive
field at the layer's stride (`rf`), so both modes compare patches of the same size and spacing.
Run: python benchmarks/patches_speed.py
"""

from __future__ import annotations

import argparse, datetime, os, platform, shlex, statistics, sys, time
from pathlib import Path

import numpy as np
import torch

from peekflow.device import resolve_device
from peekflow.models.spec import ModelSpec, load_spec
from peekflow.neurons.patches import PatchSettings, find_patches, load_images
from peekflow.neurons.topn import top_n

sys.path.insert(0, str(Path(__file__).parent))
from readme_section import write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "patches_speed"


def rf_or_int(text: str):
    return text if text == "rf" else int(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="results/features/shapes_resnet/shapes_train.h5", help="feature store")
    p.add_argument("--checkpoint", default="results/models/shapes_resnet/model.pt")
    p.add_argument("--arch", default="small_resnet")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--mean-std", type=float, nargs=2, default=[0.5, 0.25], help="preprocessing (as config.yaml)")
    p.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"])
    p.add_argument("--n", type=int, default=16, help="top-N images per channel")
    p.add_argument("--k", type=int, default=8, help="patches per channel")
    p.add_argument("--channels", default="all")
    p.add_argument("--window-size", type=rf_or_int, default="rf", help='"rf" (receptive field) or pixels')
    p.add_argument("--window-stride", type=rf_or_int, default="rf", help='"rf" (the layer\'s stride) or pixels')
    p.add_argument("--window-fill", default="pad", choices=["resize", "pad"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--reps", type=int, default=1, help="timed runs of each mode, interleaved")
    p.add_argument("--write-readme", action="store_true", help="replace this benchmark's section in README.md")
    p.add_argument("--section", default=SECTION, help="README section name (e.g. patches_speed_gpu)")
    args = p.parse_args()

    os.chdir(ROOT)  # store paths of images are relative to the workflow's root
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    m, s = args.mean_std
    spec = ModelSpec(name="target", arch=args.arch, num_classes=args.num_classes,
                     preprocessing={"mean": [m] * 3, "std": [s] * 3})
    model, _ = load_spec(spec, args.checkpoint)
    common = dict(channels=args.channels, k=args.k, window_size=args.window_size,
                  window_stride=args.window_stride, window_fill=args.window_fill)
    rows, totals, totals_cpu = [], {"map": 0.0, "window": 0.0}, {"map": 0.0, "window": 0.0}
    for layer in args.layers:
        topn = top_n(args.store, layer, args.n)
        seconds, cpu, found = {"map": [], "window": []}, {"map": [], "window": []}, {}
        for _ in range(args.reps):
            for mode in ("map", "window"):
                start, start_cpu = time.perf_counter(), time.process_time()
                found[mode], info = find_patches(model, layer, topn, PatchSettings(mode=mode, **common),
                                                  spec.preprocess(), device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
        same = float(np.mean(found["map"].rows[:, 0] == found["window"].rows[:, 0]))
        # window mode's best image among map mode's k patch images
        near = float(np.mean([w in m for w, m in zip(found["window"].rows[:, 0], found["map"].rows)]))
        overlap = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(found["map"].rows,
                                                                                  found["window"].rows)]))
        med = {mode: statistics.median(v) for mode, v in seconds.items()}
        med_cpu = {mode: statistics.median(v) for mode, v in cpu.items()}
        for mode in totals:
            totals[mode] += med[mode]
            totals_cpu[mode] += med_cpu[mode]
        rows.append(f"| {layer} | {len(found['map'].channels)} | {len(np.unique(topn.indices))} | "
                    f"{info['receptive_field']['size'][0]}/{info['receptive_field']['stride'][0]} | "
                    f"{info['windows']['size'][0]}, {info['windows']['per_image']} | {med['map']:.2f} | "
                    f"{med['window']:.2f} | {med['window'] / med['map']:.1f}x | {med_cpu['map']:.2f} | "
                    f"{med_cpu['window']:.2f} | {med_cpu['window'] / med_cpu['map']:.1f}x | {100 * same:.0f}% | "
                    f"{100 * near:.0f}% | {100 * overlap:.0f}% |")
        print(rows[-1], flush=True)

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    h, w = load_images([topn.paths[0, 0]], spec.preprocess())[0].shape[1:]
    section = "\n".join([
        f"## Patch search: map vs. window mode (`patches_speed.py`, {device.type})", "",
        "Baseline: window mode (the original's sliding window: every window re-run through the model). Both modes "
        "search the same channels among the same top-N images; times are `find_patches` in-process (incl. loading "
        "images, the receptive-field probe of map mode and cropping). *same best image*: share of channels whose "
        "best patch comes from the same image in both modes; *top-k overlap*: mean share of images common to both "
        "modes' k patches; *window best in map top-k*: share of channels whose window-mode best image is among "
        "map mode's k patch images. Map mode ranks a channel's images by their best unit, i.e. by the store's spatial "
        "max, so its best image is the channel's top-1 image of the store; where one window is the whole image "
        "(field >= input), window mode's is too, by construction.", "",
        "| layer | channels | images | field/stride px | window px, per image | map s | window s | speed-up "
        "| map CPU s | window CPU s | CPU speed-up | same best image | window best in map top-k | top-k overlap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
        f"**All layers: map {totals['map']:.1f} s, window {totals['window']:.1f} s wall clock "
        f"({totals['window'] / totals['map']:.1f}x); CPU time map {totals_cpu['map']:.1f} s, window "
        f"{totals_cpu['window']:.1f} s: map mode is {totals_cpu['window'] / totals_cpu['map']:.1f}x faster** "
        "(target >= 10x). CPU time is the steadier figure when other jobs share the cores.", "",
        f"Setup: the embedded default's target ({args.arch}, {args.store}), top-N {args.n}, k {args.k}, channels "
        f"{args.channels}, {h}x{w} px inputs, windows: size {args.window_size}, stride {args.window_stride}, "
        f"fill {args.window_fill}, device {device} ({dev}), torch {torch.__version__}, {torch.get_num_threads()} "
        f"torch thread(s) of {os.cpu_count()} CPUs, median of {args.reps} run(s).", "",
        f"Command: `{shlex.join(['python', 'benchmarks/patches_speed.py', *sys.argv[1:]])}`"
        f" — {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    ])
    print(section)
    if args.write_readme:
        write_section(args.section, section)


if __name__ == "__main__":
    main()

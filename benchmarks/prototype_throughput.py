"""Prototype throughput (prototypes/s): peekflow's DeepDream against torch-dreams 4.0.0, same model and objective.

peekflow: `make_deepdream`, all classes x M prototypes in one batch (the embedded default's deepdream settings:
target log-probability + PEEK's penalizer, Fourier parameterisation, jitter 2 + flip, Adam lr 0.05), and the same
with batch_size 1 (no batching: separates the gain of batching from the rest). torch-dreams: `Dreamer.render`, one
image per call (its documented use), with the same objective as its `custom_func`, its Fourier `AutoImageParam`
(std 0.01), AdamW with weight decay 0 (= Adam) at the same lr, the same transforms as its custom transforms, the
model's normalisation via `set_custom_normalization`; and its batched mode (`BatchedAutoImageParam` +
`BatchedObjective`) over the same targets; `Dreamer` leaves the weights' gradients on, so its one-per-call render is
timed as documented and with the model frozen by hand. Also the model's bare forward + backward at batch 1 and at
the full batch: the floor, and what batching can gain on this device. Same image size and steps everywhere; CPU
fp32, 1 torch thread by default.
Runs are interleaved (peekflow in this process, torch-dreams in a subprocess per repetition, timed inside it after a
warm-up render, so interpreter start-up and imports are not counted).

torch-dreams is no peekflow dependency; install it into a throwaway venv that reuses peekflow's venv (the same torch,
torchvision, numpy, tqdm and peekflow), never letting pip resolve torch:

    python -m venv /tmp/td-venv
    echo "import site; site.addsitedir('$(python -c 'import site; print(site.getsitepackages()[0])')')" \\
        > /tmp/td-venv/lib/python3.11/site-packages/zz_peekflow_venv.pth
    /tmp/td-venv/bin/pip install --no-deps torch-dreams==4.0.0 opencv-python-headless

(`python` being peekflow's venv; torch-dreams imports cv2 at import time, its declared `mkl` is never imported.)
Run: python benchmarks/prototype_throughput.py --torch-dreams-python /tmp/td-venv/bin/python [--write-readme]
"""

from __future__ import annotations

import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.models.checkpoint import load_model, save_checkpoint
from peekflow.models.registry import build_model
from peekflow.prototypes.batching import transforms_of
from peekflow.prototypes.deepdream import DreamSettings, TARGET_LOSSES, make_deepdream
from peekflow.synthesis.fold import fold_batchnorm
from peekflow.synthesis.objective import DEFAULT_MODEL, Activations
from peekflow.synthesis.regularisers import penalizer
from peekflow.synthesis.transforms import compose
from readme_section import command_line, write_section

README = Path(__file__).with_name("README.md")
ARCH, CLASSES = "small_resnet", [f"class{i}" for i in range(10)]
EMBEDDED = README.parent.parent / "results/models/shapes_resnet/model.pt"  # arch small_resnet, PREP below
PREP = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # as the default config's models


def timed(fn, device):
    """(wall seconds, CPU seconds of this process, fn()). With 1 torch thread the CPU time is the work done, hardly
    changed by other jobs on the same cores; the wall time is what a user waits, and it is not."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def target_hits(model: nn.Module, images: torch.Tensor, targets, prep: Preprocessing, device) -> list[float]:
    """Per prototype: the model's probability of its target (a check that both sides did the same work)."""
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (prep.mean, prep.std))
    with torch.no_grad():
        p = model(((images.to(device) - mean) / std)).softmax(1)
    return p[torch.arange(len(targets)), torch.as_tensor(targets, device=device)].tolist()


def model_only(model: nn.Module, batch: int, steps: int, size: int, device, as_render_runs_it: bool = False) -> None:
    """`steps` forward + backward passes (to the input, weights frozen), nothing else: the floor of a renderer that
    runs the model as it is. as_render_runs_it: the model as peekflow's render runs it (batch norm folded into the
    convolutions, channels-last input)."""
    x = torch.rand(batch, 3, size, size, device=device)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    run = model
    if as_render_runs_it:
        run = fold_batchnorm(model.eval())[0]
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    for _ in range(steps):
        run(x).sum().backward()
    for p, flag in zip(model.parameters(), flags):
        p.requires_grad_(flag)


# --- the torch-dreams side (runs in the torch-dreams interpreter: `--worker JOB`) --------------------------------

class PeekflowTransforms(nn.Module):
    """peekflow's per-step transforms (the very same functions) as a torch-dreams custom transform."""

    def __init__(self, transforms: list, seed: int, device):
        super().__init__()
        self.transform = compose(transforms)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def forward(self, x):
        return self.transform(x, self.generator)


class Recording(nn.Module):
    """The model, keeping its (normalised) input as the [0,1] image the penalizer needs: torch-dreams passes only
    the hooked layers' outputs to `custom_func`."""

    def __init__(self, model: nn.Module, prep: Preprocessing):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(prep.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(prep.std).view(1, 3, 1, 1))
        self.images = None

    def forward(self, x):
        self.images = x * self.std + self.mean
        return self.model(x)


def torch_dreams_worker(job: dict) -> dict:
    import torch_dreams
    import torchvision
    from torch_dreams.batched_image_param import BatchedAutoImageParam
    from torch_dreams.batched_objective import BatchedObjective

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"])  # torch-dreams draws its Fourier init from numpy
    device, s = job["device"], job["settings"]
    model, _ = load_model(job["checkpoint"], ARCH, len(CLASSES))
    prep = Preprocessing(**PREP)
    wrapped = Recording(model, prep)
    dreamer = torch_dreams.Dreamer(wrapped, quiet=True, device=device)
    dreamer.set_custom_normalization(torchvision.transforms.Normalize(prep.mean, prep.std))
    dreamer.set_custom_transforms(PeekflowTransforms(transforms_of(s["jitter"], s["flip"]), job["seed"], device))
    prior = penalizer(s["tv"], s["l1_edge"], s["l2_pixel"])
    target_loss = TARGET_LOSSES[s["target_loss"]]

    def loss_for(target: int, index: int | None = None):
        objective = target_loss([target]) + prior  # the same objective objects peekflow's DeepDream builds

        def custom_func(layer_outputs):
            images = wrapped.images if index is None else wrapped.images[index:index + 1]
            return objective(Activations(images=images, logits={DEFAULT_MODEL: layer_outputs[0]})).sum()

        return custom_func

    render = dict(layers=[wrapped], iters=s["steps"], lr=s["lr"], weight_decay=0.0, grad_clip=float("inf"))

    def one(target: int):
        param = torch_dreams.AutoImageParam(height=s["size"], width=s["size"], device=device,
                                            standard_deviation=s["init_std"])
        return dreamer.render(image_parameter=param, custom_func=loss_for(target), **render)

    # Dreamer leaves the weights' gradients on (as documented: "td"); "td_frozen" switches them off by hand, as
    # peekflow's render does. The two alternate, target by target, after a warm-up of each.
    targets, out = job["sequential_targets"], {"version": torch_dreams.__version__}
    seconds, images = {"td": [], "td_frozen": []}, {"td": [], "td_frozen": []}
    for i, t in enumerate(targets[:1] + targets):
        for key in seconds:
            model.requires_grad_(key == "td")
            wall, cpu, param = timed(lambda: one(t), device)
            if i:
                seconds[key].append((wall, cpu))
                images[key].append(param.postprocess(device=device).detach())
    for key in seconds:
        out[key] = {"s": np.sum(seconds[key], axis=0).tolist(),
                    "p": target_hits(model.to(device), torch.cat(images[key]), targets, prep, device)}

    if job["batched_targets"]:  # its best case: weights frozen too
        bt = job["batched_targets"]
        model.requires_grad_(False)
        param = BatchedAutoImageParam(batch_size=len(bt), height=s["size"], width=s["size"],
                                      standard_deviation=s["init_std"], device=device, lr=s["lr"])
        objective = BatchedObjective([loss_for(t, i) for i, t in enumerate(bt)])
        wall, cpu, param = timed(lambda: dreamer.render(image_parameter=param, custom_func=objective, **render),
                                 device)
        out["td_batched"] = {"s": [wall, cpu]}
        batch_images = torch.cat([p.postprocess(device=device).detach() for p in param.image_params])
        out["td_batched"]["p"] = target_hits(model, batch_images, bt, prep, device)
    return out


# --- the driver ------------------------------------------------------------------------------------------------

def run_torch_dreams(python: str, job: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    done = subprocess.run([python, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"the torch-dreams side failed ({python}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_dreams_version(python: str | None) -> str | None:
    if not python:
        return None
    done = subprocess.run([python, "-c", "import torch_dreams; print(torch_dreams.__version__)"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None




def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(torch_dreams_worker(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch-dreams-python", default=os.environ.get("TORCH_DREAMS_PYTHON"),
                   help="interpreter with torch-dreams 4.0.0 installed (see this file's doc string); default: "
                        "$TORCH_DREAMS_PYTHON, else this interpreter if it imports torch_dreams")
    p.add_argument("--checkpoint", default=str(EMBEDDED) if EMBEDDED.exists() else None,
                   help="peekflow small_resnet checkpoint with 10 classes; default: the embedded default's target "
                        f"({EMBEDDED.relative_to(README.parent.parent)}) where it exists, else a fresh small_resnet "
                        "seeded 0 (the speed is the same; a trained model makes the 'classified as target' column "
                        "meaningful)")
    p.add_argument("--per-class", type=int, default=4, help="peekflow prototypes per class (10 classes, 1 batch)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--steps", type=int, default=50, help="optimisation steps per prototype, both sides")
    p.add_argument("--td-prototypes", type=int, default=4,
                   help="torch-dreams one-per-call renders timed per repetition (classes 0, 1, ...)")
    p.add_argument("--unbatched-prototypes", type=int, default=4, help="peekflow batch_size=1 prototypes per rep")
    p.add_argument("--no-td-batched", action="store_true", help="skip torch-dreams' batched mode (timed in the "
                                                                "first repetition only)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each, interleaved, after a warm-up")
    p.add_argument("--threads", type=int, default=1, help="torch threads (torch.set_num_threads), both sides")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--write-readme", action="store_true", help=f"replace this benchmark's section in {README.name}")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()[0]
    td_python = args.torch_dreams_python or sys.executable
    td_version = torch_dreams_version(td_python)
    if td_version is None:
        print(f"torch-dreams is not importable from {td_python}: running peekflow only (no ratio). Install it as "
              f"this file's doc string says and pass --torch-dreams-python.", file=sys.stderr)
        if args.write_readme:
            sys.exit("--write-readme needs the torch-dreams baseline")
    elif td_version != "4.0.0":
        print(f"warning: torch-dreams {td_version}, not 4.0.0", file=sys.stderr)

    settings = DreamSettings(classes="all", per_class=args.per_class, size=args.size, steps=args.steps,
                             target_loss="log_softmax", param="fourier", jitter=2, flip=True, lr=0.05,
                             batch_size=len(CLASSES) * args.per_class, seed=0)
    unbatched = DreamSettings(**{**vars(settings), "per_class": 1, "batch_size": 1,
                                 "classes": [c % len(CLASSES) for c in range(args.unbatched_prototypes)]})
    prep = Preprocessing(**PREP)
    with tempfile.TemporaryDirectory(prefix="peekflow-bench-") as work:
        checkpoint = args.checkpoint
        if not checkpoint:
            checkpoint = str(Path(work) / "model.pt")
            torch.manual_seed(0)
            save_checkpoint(checkpoint, build_model(ARCH, len(CLASSES)), ARCH, CLASSES, {})
        model, _ = load_model(checkpoint, ARCH, len(CLASSES))
        model.to(device)
        n_batch = len(CLASSES) * args.per_class
        td_targets = [c % len(CLASSES) for c in range(args.td_prototypes)]
        job = {"checkpoint": checkpoint, "threads": args.threads, "seed": 0, "device": str(device),
               "settings": vars(settings) | {"size": args.size},
               "sequential_targets": td_targets,
               "batched_targets": [] if args.no_td_batched else [c for c in range(len(CLASSES))
                                                                  for _ in range(args.per_class)]}

        make_deepdream(model, CLASSES, prep, settings, device=device)  # warm-up
        per_proto = {"batched": [], "unbatched": [], "td": [], "td_frozen": [], "td_batched": [], "floor_1": [],
                     "floor_n": [], "floor_render": []}  # (wall, cpu) s per prototype
        hits = {}
        for rep in range(args.reps):
            wall, cpu, protos = timed(lambda: make_deepdream(model, CLASSES, prep, settings, device=device), device)
            per_proto["batched"].append((wall / n_batch, cpu / n_batch))
            hits["batched"] = target_hits(model, torch.from_numpy(protos.images), protos.targets, prep, device)
            if args.unbatched_prototypes:
                wall, cpu, protos = timed(lambda: make_deepdream(model, CLASSES, prep, unbatched, device=device), device)
                per_proto["unbatched"].append((wall / args.unbatched_prototypes, cpu / args.unbatched_prototypes))
                hits["unbatched"] = target_hits(model, torch.from_numpy(protos.images), protos.targets, prep, device)
            for key, batch, as_render in (("floor_1", 1, False), ("floor_n", n_batch, False),
                                          ("floor_render", n_batch, True)):
                wall, cpu, _ = timed(lambda: model_only(model, batch, args.steps, args.size, device, as_render),
                                     device)
                per_proto[key].append((wall / batch, cpu / batch))
            if td_version:  # torch-dreams' batched mode (the slowest run) in the first repetition only
                out = run_torch_dreams(td_python, job if rep == 0 else job | {"batched_targets": []})
                for key in ("td", "td_frozen", "td_batched"):
                    if key in out:
                        n = n_batch if key == "td_batched" else len(td_targets)
                        per_proto[key].append(tuple(s / n for s in out[key]["s"]))
                        hits[key] = out[key]["p"]
            print(f"rep {rep + 1}/{args.reps}: s/prototype (wall, cpu) " +
                  ", ".join(f"{k} {v[-1][0]:.3f} {v[-1][1]:.3f}" for k, v in per_proto.items() if v), file=sys.stderr)

    wall = {k: statistics.median(w for w, _ in v) for k, v in per_proto.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in per_proto.items() if v}
    names = {"td": f"torch-dreams {td_version} `Dreamer.render`, 1 prototype per call, as documented (baseline)",
             "td_frozen": f"torch-dreams {td_version} `Dreamer.render`, 1 per call, model frozen by hand",
             "td_batched": f"torch-dreams {td_version} batched mode (`BatchedAutoImageParam`, batch {n_batch}), "
                           "model frozen by hand",
             "unbatched": "peekflow `make_deepdream`, batch_size 1 (no batching)",
             "batched": f"peekflow `make_deepdream`, {len(CLASSES)} classes x {args.per_class} in 1 batch",
             "floor_1": "the model's forward + backward alone, batch 1 (floor of a renderer running the model as is)",
             "floor_n": f"the model's forward + backward alone, batch {n_batch}",
             "floor_render": f"the model as peekflow's render runs it (batch norm folded, channels-last), forward + "
                             f"backward alone, batch {n_batch}"}
    counts = {"floor_1": 1, "floor_n": n_batch, "floor_render": n_batch, "td": args.td_prototypes,
              "td_frozen": args.td_prototypes, "td_batched": n_batch, "unbatched": args.unbatched_prototypes,
              "batched": n_batch}
    table = ["| run | prototypes/s, CPU time | ms CPU per prototype | prototypes/s, wall | prototypes x runs "
             "| classified as target (mean p) |", "|---|---:|---:|---:|---:|---:|"]
    for key in names:
        if key in cpu:
            p = np.asarray(hits[key]) if key in hits else None
            check = "-" if p is None else f"{np.mean(p > 0.5):.0%} ({p.mean():.2f})"
            table.append(f"| {names[key]} | {1 / cpu[key]:.2f} | {1000 * cpu[key]:.0f} | {1 / wall[key]:.2f} | "
                         f"{counts[key]} x {len(per_proto[key])} | {check} |")

    def ratio(a: str, b: str) -> str:
        return f"{cpu[a] / cpu[b]:.1f}x (wall: {wall[a] / wall[b]:.1f}x)"

    lines = []
    if "td" in cpu:
        lines += [f"**peekflow (1 batch) is {ratio('td', 'batched')} faster per prototype than torch-dreams' "
                  f"`Dreamer.render` as documented** (target >= 5x); {ratio('td_frozen', 'batched')} than "
                  f"`Dreamer.render` with the model frozen by hand"
                  + (f", {ratio('td_batched', 'batched')} than torch-dreams' batched mode (frozen)."
                     if "td_batched" in cpu else "."), ""]
    if "unbatched" in cpu:
        lines.append(f"Where it comes from: batching alone (peekflow batch 1 -> 1 batch of {n_batch}) "
                     f"{ratio('unbatched', 'batched')}"
                     + (f"; peekflow batch 1 vs `Dreamer.render` as documented {ratio('td', 'unbatched')}, vs "
                        f"`Dreamer.render` frozen {ratio('td_frozen', 'unbatched')}." if "td" in cpu else ".")
                     + f" The model's forward + backward alone gains only {ratio('floor_1', 'floor_n')} from batch 1 "
                     f"to {n_batch} on {device.type}; the rest of the batched gain is the per-step work around the "
                     "model, shared by the batch and kept small: the jitter and flip of a step are one gather (their "
                     "composed pixel permutation) with a gather as backward, the penalizer is one pass with its "
                     "gradient written out, Adam is the fused kernel, the Fourier scale and normalisation are one "
                     "multiplication each. And the model runs with its batch norms folded into the convolutions "
                     f"and channels-last input: {ratio('floor_n', 'floor_render')} on the model alone at batch "
                     f"{n_batch}.")
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    model_name = (f"{ARCH} from `{os.path.relpath(args.checkpoint, README.parent.parent)}`" if args.checkpoint
                  else f"a fresh {ARCH} (10 classes, seed 0)")
    section = "\n".join([
        "## Prototype throughput (`prototype_throughput.py`)", "",
        "DeepDream class prototypes per second. Both sides optimise the same objective (the target's log-probability "
        "+ PEEK's penalizer tv_l2 + l1_edge + l2_pixel on the [0,1] image: the embedded default's `deepdream` "
        "settings) with a Fourier parameterisation (decorrelated colour, sigmoid, init std 0.01), jitter 2 + "
        "random flip (peekflow's transform functions, passed to torch-dreams as its custom transforms), Adam "
        "(torch-dreams: AdamW, weight decay 0) at lr 0.05, the model's own input normalisation, the same model, "
        "image size and steps. Baseline: torch-dreams' documented use, `Dreamer.render` with a `custom_func`, one "
        "image per call; also its batched mode (`BatchedAutoImageParam` + `BatchedObjective`).", "",
        *table, "",
        *lines, "",
        f"Setup: {model_name}, {args.size}x{args.size} px, {args.steps} steps, device {device} ({dev}), fp32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} CPUs, load average "
        f"(1 min) {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; "
        f"{args.reps} interleaved repetitions after a warm-up (torch-dreams' batched mode: 1), medians; torch-dreams "
        "timed inside its own interpreter. Rates from each process's CPU time (`time.process_time`: with 1 torch "
        "thread the work done, barely moved by other jobs on the cores) and from wall time (what a user waits; "
        "distorted when other jobs share the cores). "
        "Remaining differences: torch-dreams' Fourier scale uses decay 0.75 (peekflow 1.0) and it always runs "
        "`clip_grad_norm_` (given max_norm inf here, so a no-op); `Dreamer` leaves the model's weight gradients on "
        "(backward computes them every step); \"frozen by hand\" is `model.requires_grad_(False)` before rendering, "
        "what peekflow's render does itself.", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("prototype_throughput", section)


if __name__ == "__main__":
    main()

"""VITAL against the plain channel visualisation (its baseline: the same render without the matching term), per layer.

Runs on the embedded default's outputs (run the workflow first: the target, the probe, each layer's patch folder).
For each layer and render seed: `peekflow vital`'s library calls on the chosen channels, then per image kind (plain,
VITAL, the real top patches) the channel's spatial-mean activation, the probe model's similarity to the channel's
patches (cosine to their mean penultimate feature; for the patches, leave-one-out: the ceiling), the share of
channels where VITAL's similarity beats the plain one's, and CPU seconds per channel. Every figure is the mean over
the channels, then mean +- std over the seeds.
Run: python benchmarks/vital_faithfulness.py [--layers layer3 layer4] [--channels 0:32] [--seeds 0 1 2] [--write-readme]
Another model: run it in a folder laid out like the workflow's (results/models/<m>/model.pt, results/neurons/<m>/
<layer>/patches) with --config naming target_model and probe_model there, and --section / --heading / --setup for
its own README section (vit_digits.py builds such a folder for a small vision transformer).
"""

from __future__ import annotations

import argparse, os, platform, sys
from pathlib import Path

import numpy as np
import torch
import yaml

from peekflow.models.spec import ModelSpec, load_spec
from peekflow.neurons.vital import VitalSettings, probe_similarity, vital_channels
from peekflow.neurons.vital_files import reference_images

sys.path.insert(0, str(Path(__file__).parent))
from readme_section import command_line, write_section

SECTION = "vital_faithfulness"


def spec_of(config: dict, name: str) -> ModelSpec:
    m = config["models"][name]
    return ModelSpec(name=name, arch=m["arch"], num_classes=m["num_classes"], preprocessing=m["preprocessing"],
                     arch_kwargs=m.get("arch_kwargs") or {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--layers", nargs="+", default=["layer3", "layer4"])
    p.add_argument("--channels", default="0:32")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--settings", default="{}", help="extra VITAL settings (JSON)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-readme", action="store_true")
    p.add_argument("--section", default=SECTION, help="README section to write")
    p.add_argument("--heading", default="VITAL against the plain channel visualisation (`vital_faithfulness.py`)")
    p.add_argument("--setup", default=None, help="the setup sentence (default: the embedded default's)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(open(args.config))
    target, probe_name = config["target_model"], config["probe_model"]
    spec, pspec = spec_of(config, target), spec_of(config, probe_name)
    model, _ = load_spec(spec, f"results/models/{target}/model.pt")
    probe, _ = load_spec(pspec, f"results/models/{probe_name}/model.pt")
    probe.eval()
    pp = pspec.preprocess()
    extra = yaml.safe_load(args.settings)
    rows = []
    for layer in args.layers:
        runs = []
        for seed in args.seeds:
            s = VitalSettings(**{**extra, "channels": args.channels, "seed": seed})
            _, channels, refs = reference_images(f"results/neurons/{target}/{layer}/patches", None, s)
            result = vital_channels(model, layer, channels, refs, spec.preprocess(), s, "cpu")
            sim = probe_similarity(result, probe, config["models"][probe_name]["penultimate"], (pp.mean, pp.std),
                                   "cpu")
            runs.append({**{f"act_{k}": float(v.mean()) for k, v in result.activation.items()},
                         **{f"sim_{k}": float(v.mean()) for k, v in sim.items()},
                         "wins": float((sim["vital"] > sim["plain"]).mean()),
                         **{f"cpu_{k}": float(v.mean()) for k, v in result.seconds.items()}})
            print(layer, seed, runs[-1], flush=True)
        keys = runs[0].keys()
        stats = {k: (np.mean([r[k] for r in runs]), np.std([r[k] for r in runs])) for k in keys}
        rows.append((layer, len(channels), stats))

    def pm(stats, key, fmt="{:.3f}"):
        mean, std = stats[key]
        return f"{fmt.format(mean)} ± {fmt.format(std)}"

    table = [f"| {layer} ({n} ch.) | {pm(s, 'act_plain', '{:.2f}')} | {pm(s, 'act_vital', '{:.2f}')} | "
             f"{pm(s, 'act_reference', '{:.2f}')} | {pm(s, 'sim_plain')} | {pm(s, 'sim_vital')} | "
             f"{pm(s, 'sim_reference')} | {pm(s, 'wins', '{:.2f}')} | {pm(s, 'cpu_plain', '{:.2f}')} | "
             f"{pm(s, 'cpu_vital', '{:.2f}')} |" for layer, n, s in rows]
    dev = platform.processor() or platform.machine()
    setup = args.setup or f"the embedded default ({args.config}, target {target})"
    section = "\n".join([
        f"## {args.heading}", "",
        "Baseline: the plain channel visualisation, the same render without VITAL's matching term.", "",
        "| layer | activation: plain | VITAL | top patches | probe similarity: plain | VITAL | patches (LOO) "
        "| VITAL beats plain | CPU s/channel: plain | VITAL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *table, "",
        f"Mean over the channels {args.channels} of each layer, then mean ± std over render seeds {args.seeds}. "
        "Activation: the channel's spatial mean on the image (patches: their mean). Probe similarity: cosine, in the "
        f"probe model's ({probe_name}) penultimate features, to the mean feature of the channel's top patches; the "
        "patches' own value is leave-one-out (each to the mean of the others), the ceiling. VITAL beats plain: share "
        "of channels where VITAL's similarity is the higher.", "",
        f"Setup: {setup}, VITAL settings: defaults + {extra or '{}'}, "
        f"CPU ({dev}), torch {torch.__version__}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} CPUs.", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section(args.section, section)


if __name__ == "__main__":
    main()

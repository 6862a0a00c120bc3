"""`peekflow emergence`: sample embeddings, importance weights, regional embeddings and knowledge points per layer."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from peekflow.cli import add_device_argument, add_settings_argument, stage_main
from peekflow.device import set_threads
from peekflow.settings import parse_settings

HELP = """Emergence of intermediate visual patterns (Li, Wang, Zhang, NeurIPS 2021) in the layers of a model, from a
feature store with their spatial maps (peekflow extract with settings maps: [...]). Per layer: a 3-D sample embedding
aligned with the tempered output, importance weights of regions and channels, a regional embedding in the same
space, and the knowledge points (regions whose class probability under the sample mixture reaches the threshold).

Writes OUT_DIR/<layer>.h5 and <layer>.png per layer, and OUT_DIR/knowledge_points.csv, .json, .png (the curve)."""


def add_arguments(p) -> None:
    from peekflow.emergence.analysis import EmergenceSettings

    p.add_argument("--store", required=True, help="feature store (.h5) with maps/<layer> of every layer")
    p.add_argument("--layers", required=True, nargs="+", help="layers to analyse, shallow to deep")
    add_settings_argument(p, EmergenceSettings)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--dpi", type=int, default=120)
    p.add_argument("--out-dir", required=True, help="folder of the outputs")


def run(args) -> None:
    from peekflow.emergence.analysis import EmergenceSettings, analyse
    from peekflow.emergence.files import count_row, write_counts, write_layer
    from peekflow.cli import store_model
    from peekflow.emergence.plots import plot_counts, plot_layer

    set_threads(args.threads)
    settings = parse_settings(EmergenceSettings, args.settings, "--settings")
    out = Path(args.out_dir)
    plain = dataclasses.asdict(settings)
    rows, model = [], None
    name = store_model(args.store)  # figure titles name it
    for samples, result in analyse(args.store, args.layers, settings, device=args.device):
        write_layer(out / f"{result.layer}.h5", result, samples, plain, {"store": str(args.store)})
        plot_layer(out / f"{result.layer}.png", result.layer, result.sample.embed(result.features).cpu().numpy(),
                   samples.labels.numpy(), result.sample.mixture.directions.cpu().numpy(),
                   result.region_emb.cpu().numpy(), result.knowledge.mask.cpu().numpy(),
                   result.knowledge.classes.cpu().numpy(), samples.classes or
                   [str(i) for i in range(samples.probs.shape[1])], dpi=args.dpi,
                   title=f"{name}: emergence at {result.layer}" if name else "")
        rows.append(count_row(result, samples))
        model = model or samples
    write_counts(out / "knowledge_points.csv", out / "knowledge_points.json", rows,
                 {"store": str(args.store), "images": len(model.rows), "settings": plain})
    plot_counts(out / "knowledge_points.png", rows, title=f"{name + ': ' if name else ''}emergence, knowledge points "
                f"per layer ({len(model.rows)} images)", dpi=args.dpi)
    logging.getLogger("peekflow").info("knowledge points per layer: %s",
                                       ", ".join(f"{r['layer']} {r['knowledge_points']}" for r in rows))


if __name__ == "__main__":
    stage_main(__name__)

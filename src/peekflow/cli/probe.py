"""`peekflow probe`: PEEK probing -- which known class is each output unit of the unknown network?"""

from __future__ import annotations

import json
import logging

from peekflow.cli import add_device_argument, add_settings_argument, load_model_spec, stage_main
from peekflow.device import resolve_device, set_threads
from peekflow.features.store import load_feature_set
from peekflow.io import write_json
from peekflow.probing import ProbeSettings, evaluate, plot_similarity, probe, write_similarity_csv
from peekflow.prototypes.quality import forward
from peekflow.prototypes.store import read_prototypes
from peekflow.settings import parse_settings

HELP = """Embed the prototypes of an unknown network and a labelled known search space with an independent probe
network; write the similarity matrix (units x known classes, CSV and heatmap) and probing.json.

The probing itself reads only the prototype images and their output-unit indices. The class names the prototype
file records for its model are the answer key: they enter only the evaluation (accuracy, hungarian_accuracy)."""


def add_arguments(p) -> None:
    p.add_argument("--prototypes", required=True, help="prototype file (.h5) of the unknown (target) model")
    p.add_argument("--probe-model", required=True, help="probe model spec as JSON")
    p.add_argument("--probe-checkpoint", required=True, help="probe model weights")
    p.add_argument("--layer", required=True, help="the probe's embedding layer (its penultimate layer)")
    p.add_argument("--known-store", required=True,
                   help="the probe's feature store of the labelled known search space (features/<layer>, labels)")
    add_settings_argument(p, ProbeSettings)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-csv", required=True, help="similarity matrix (.csv): one row per unit")
    p.add_argument("--out-png", required=True, help="similarity heatmap (.png)")
    p.add_argument("--out-json", required=True, help="probing.json: accuracies and per-unit matches")


def run(args) -> None:
    set_threads(args.threads)
    settings = parse_settings(ProbeSettings, args.settings, "--settings")
    protos = read_prototypes(args.prototypes)
    known = load_feature_set(args.known_store, layer=args.layer)
    known_classes = known.attrs.get("classes")
    if not known_classes:
        raise ValueError(f"feature store {args.known_store} records no class names (attribute `classes`)")
    known_classes = json.loads(known_classes) if isinstance(known_classes, str) else list(known_classes)
    model, prep, probe_classes = load_model_spec(args.probe_model, args.probe_checkpoint, "--probe-model")
    if probe_classes != known_classes:
        raise ValueError(f"feature store {args.known_store} was not made with the probe's classes "
                         f"({known_classes} vs {probe_classes})")
    _, features = forward(model, protos.images, prep, resolve_device(args.device), layer=args.layer)
    result = probe(features, protos.targets, known.features, known.labels, len(known_classes), settings)

    report = evaluate(result, protos.classes, known_classes)  # the answer key enters here, and only here
    report.update(prototypes=str(args.prototypes), method=protos.method, model=protos.model, probe_layer=args.layer,
                  known_store=str(args.known_store), settings=vars(settings))
    write_similarity_csv(args.out_csv, result, known_classes)
    plot_similarity(args.out_png, result, known_classes, protos.classes,
                    title=f"{protos.model} {protos.method} prototypes by probe {args.layer}: accuracy "
                          f"{report['accuracy']:.0%}, Hungarian {report['hungarian_accuracy']:.0%}")
    write_json(args.out_json, report)
    logging.getLogger("peekflow").info("probing %s: accuracy %.3f, hungarian %.3f (chance %.3f)", args.prototypes,
                                       report["accuracy"], report["hungarian_accuracy"], report["chance"])


if __name__ == "__main__":
    stage_main(__name__)

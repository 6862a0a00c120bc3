"""`peekflow quality`: how well prototypes carry their class, by the target model and an independent probe."""

from __future__ import annotations

import logging

from peekflow.cli import add_device_argument, load_model_spec, stage_main
from peekflow.device import resolve_device, set_threads
from peekflow.io import write_json
from peekflow.prototypes.quality import evaluate_quality
from peekflow.prototypes.store import read_prototypes

HELP = """Classify prototypes with the target model they were made for (target_accuracy, target_confidence) and
with an independent probe model (probe_accuracy: transfer), writing a JSON report."""


def add_arguments(p) -> None:
    p.add_argument("--prototypes", required=True, help="prototype file (.h5) of the target model")
    p.add_argument("--model", required=True, help="target model spec as JSON")
    p.add_argument("--checkpoint", required=True, help="target model weights")
    p.add_argument("--probe-model", help="probe model spec as JSON")
    p.add_argument("--probe-checkpoint", help="probe model weights")
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="quality report (.json)")


def run(args) -> None:
    set_threads(args.threads)
    if bool(args.probe_model) != bool(args.probe_checkpoint):
        raise ValueError("give both --probe-model and --probe-checkpoint, or neither")
    protos = read_prototypes(args.prototypes)
    target = load_model_spec(args.model, args.checkpoint, "--model")
    probe = load_model_spec(args.probe_model, args.probe_checkpoint, "--probe-model") if args.probe_model else None
    report = evaluate_quality(protos, target, probe, resolve_device(args.device))
    write_json(args.out, report)
    logging.getLogger("peekflow").info("%s: target accuracy %.3f, probe accuracy %s", args.prototypes,
                                       report["target_accuracy"], report.get("probe_accuracy"))


if __name__ == "__main__":
    stage_main(__name__)

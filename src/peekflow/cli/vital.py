"""`peekflow vital`: VITAL visualisations of a layer's channels, guided by their top patches -> vital.h5 and a grid."""

from __future__ import annotations

import json
import logging

from peekflow.cli import add_model_arguments, load_model, stage_main

HELP = """VITAL (Görgün et al. 2025): per channel, a feature visualisation whose relevance-weighted feature
distributions at earlier layers are matched to those of the channel's real top patches, beside the plain channel
visualisation (the same render without the matching term).

Writes <out> (vital.h5: channels, plain, vital, references, activations, probe similarities, CPU seconds) and --grid
(per channel: plain | VITAL | top patches). With --probe-model, each image's similarity to its references is measured
in the probe's penultimate features (--probe-layer).
Example:
  peekflow vital --model '{"name": "m", "arch": "small_resnet", "num_classes": 10}' --checkpoint m.pt \\
      --patches results/neurons/m/layer4/patches --settings '{"channels": "0:16"}' \\
      --out results/neurons/m/layer4/vital.h5 --grid results/neurons/m/layer4/vital.png"""


def add_arguments(p) -> None:
    from peekflow.neurons.vital import VitalSettings

    add_model_arguments(p, VitalSettings)
    p.add_argument("--patches", required=True, help="the layer's patch folder (peekflow patches)")
    p.add_argument("--topn", default=None, help="the layer's top-N file (needed for reference: images)")
    p.add_argument("--probe-model", default=None, help="probe model spec as JSON (faithfulness measure)")
    p.add_argument("--probe-checkpoint", default=None, help="probe model weights")
    p.add_argument("--probe-layer", default=None, help="probe layer whose pooled output is the feature")
    p.add_argument("--out", required=True, help="vital.h5 to write")
    p.add_argument("--grid", default=None, help="PNG grid to write")


def run(args) -> None:
    from peekflow.device import resolve_device
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.neurons.vital import VitalSettings, probe_similarity, vital_channels
    from peekflow.neurons.vital_files import reference_images, write_vital
    from peekflow.settings import parse_settings

    probe_args = [args.probe_model, args.probe_checkpoint, args.probe_layer]
    if any(probe_args) and not all(probe_args):
        raise ValueError("--probe-model, --probe-checkpoint and --probe-layer go together")
    spec, settings, model, _ = load_model(args, VitalSettings)
    device = resolve_device(args.device)
    layer, channels, references = reference_images(args.patches, args.topn, settings)
    preprocessing = spec.preprocess()
    result = vital_channels(model, layer, channels, references, preprocessing, settings, device)
    attrs = {"layer": layer, "model": spec.name, "checkpoint": str(args.checkpoint), "patches": str(args.patches),
             "settings": settings, "match_layers": result.match_layers, "probe": ""}
    if all(probe_args):
        probe_spec = parse_settings(ModelSpec, args.probe_model, "--probe-model")
        probe, _ = load_spec(probe_spec, args.probe_checkpoint)
        pp = probe_spec.preprocess()
        result.similarity = probe_similarity(result, probe.to(device).eval(), args.probe_layer, (pp.mean, pp.std),
                                             device)
        attrs["probe"] = json.dumps({"model": probe_spec.name, "layer": args.probe_layer})
    write_vital(args.out, args.grid, result, attrs)
    summary = {k: float(v.mean()) for k, v in result.activation.items()}
    logging.getLogger("peekflow").info("wrote %s: %d channels of %s; mean activation %s; probe similarity %s; CPU s "
                                       "per channel %s", args.out, len(result.channels), layer, json.dumps(summary),
                                       json.dumps({k: float(v.mean()) for k, v in result.similarity.items()}),
                                       json.dumps({k: float(v.mean()) for k, v in result.seconds.items()}))


if __name__ == "__main__":
    stage_main(__name__)

"""`peekflow patches`: top-k patches per channel of a layer among its top-N images -> patch folder (h5 + PNGs)."""

from __future__ import annotations

import json
import logging
import time

from peekflow.cli import add_device_argument, add_settings_argument, stage_main
from peekflow.device import resolve_device, set_threads
from peekflow.models.spec import ModelSpec, load_spec
from peekflow.neurons.patches import PatchSettings
from peekflow.settings import parse_settings, to_json

HELP = """Top-k patches per channel of a layer, found among the channel's top-N images (`peekflow topn`).

mode map: one forward pass per image; the patch is the receptive field of the arg-max unit of the channel's map.
mode window: sliding windows (window_size, window_stride; "rf": the layer's receptive field clipped to the input, moved
by the layer's stride), each re-run through the model (in place on a zero canvas, or resized to the input size:
window_fill) and scored by the channel's spatial max; best window per image.
Writes <out>/patches.h5 (pixels, paths, rows, boxes, activations), <out>/channel_<c>.png and <out>/overview.png.
Example:
  peekflow patches --model '{"name": "m", "arch": "small_resnet", "num_classes": 10}' --checkpoint m.pt \\
      --topn results/neurons/m/layer4/topn.h5 --settings '{"channels": "0:16", "k": 8}' \\
      --out results/neurons/m/layer4/patches"""


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="model weights (peekflow checkpoint or a state dict)")
    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    p.add_argument("--topn", required=True, help="top-N file of the layer (peekflow topn)")
    add_settings_argument(p, PatchSettings)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True, help="patch folder to write (replaced when complete)")


def run(args) -> None:
    from peekflow.neurons.patch_files import write_patch_folder
    from peekflow.neurons.patches import find_patches
    from peekflow.neurons.topn import read_topn

    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(PatchSettings, args.settings, "--settings")
    topn = read_topn(args.topn)
    layer = topn.attrs["layer"]
    preprocessing = spec.preprocess()
    recorded = topn.attrs.get("preprocessing")
    if recorded is not None and json.loads(recorded) != preprocessing.as_dict():
        raise ValueError(f"top-N file {args.topn} ranks images under preprocessing {recorded}, but model "
                         f"{spec.name!r} is configured with {json.dumps(preprocessing.as_dict())}")
    model, _ = load_spec(spec, args.checkpoint)
    device = resolve_device(args.device)
    start = time.perf_counter()
    patches, info = find_patches(model, layer, topn, settings, preprocessing, device)
    info["seconds"] = round(time.perf_counter() - start, 3)
    attrs = {"layer": layer, "model": spec.name, "topn": str(args.topn), "checkpoint": str(args.checkpoint),
             "source_store": topn.attrs.get("source_store", ""), "settings": to_json(settings), "info": info}
    write_patch_folder(args.out, patches, attrs)
    logging.getLogger("peekflow").info("wrote %s: %d patches for each of %d channels of %s (%s mode, %.1fs); %s",
                                       args.out, patches.rows.shape[1], len(patches.channels), layer,
                                       settings.mode, info["seconds"], json.dumps(info))


if __name__ == "__main__":
    stage_main(__name__)

"""`peekflow patches`: top-k patches per channel of a layer among its top-N images -> patch folder (h5 + PNGs); with
--shard I/S (S > 1), the patches of shard I of the channel batches -> a shard file that `peekflow merge-patches`
joins."""

from __future__ import annotations

import json
import logging
import time

from peekflow.cli import add_model_arguments, batch_plan, load_model, stage_main
from peekflow.neurons.patches import PatchSettings
from peekflow.settings import to_json

HELP = """Top-k patches per channel of a layer, found among the channel's top-N images (`peekflow topn`).

mode map: one forward pass per image; the patch is the receptive field of the arg-max unit of the channel's map.
mode window: sliding windows (window_size, window_stride; "rf": the layer's receptive field clipped to the input, moved
by the layer's stride), each re-run through the model (in place on a zero canvas, or resized to the input size:
window_fill) and scored by the channel's spatial max; best window per image.
Writes <out>/patches.h5 (pixels, paths, rows, boxes, activations), <out>/channel_<c>.png and <out>/overview.png.
Example:
  peekflow patches --model '{"name": "m", "arch": "small_resnet", "num_classes": 10}' --checkpoint m.pt \\
      --topn results/neurons/m/layer4/topn.h5 --settings '{"channels": "0:16", "k": 8}' \\
      --out results/neurons/m/layer4/patches
Channels are searched in batches of channel_batch; a killed job resumes from <out>.partial/. With --shard 1/4, --out is
the shard file (.h5) of the second of 4 contiguous ranges of those batches; `peekflow merge-patches --shards <4 files>
--out <folder>` writes the one-job folder. The search time goes to the log, not the folder."""


def add_arguments(p) -> None:
    add_model_arguments(p, PatchSettings, shard="search only shard I of S of the channel batches, into the shard "
                                                "file --out")
    p.add_argument("--topn", required=True, help="top-N file of the layer (peekflow topn)")
    p.add_argument("--out", required=True,
                   help="patch folder to write (replaced when complete; with --shard I/S, S > 1: the shard file)")


def topn_digest(topn) -> str:
    """SHA-256 of a top-N file's ranking (indices, activations, paths): what a resumed job must share."""
    import hashlib

    digest = hashlib.sha256(topn.indices.tobytes() + topn.activations.tobytes())
    digest.update("\n".join(map(str, topn.paths.ravel())).encode())
    return digest.hexdigest()


def run(args) -> None:
    from peekflow.device import resolve_device
    from peekflow.neurons.patch_files import write_patch_folder
    from peekflow.neurons.patch_shards import write_patch_shard
    from peekflow.neurons.patches import find_patches, select_channels
    from peekflow.neurons.topn import read_topn

    spec, settings, model, _ = load_model(args, PatchSettings)
    topn = read_topn(args.topn)
    layer = topn.attrs["layer"]
    preprocessing = spec.preprocess()
    recorded = topn.attrs.get("preprocessing")
    if recorded is not None and json.loads(recorded) != preprocessing.as_dict():
        raise ValueError(f"top-N file {args.topn} ranks images under preprocessing {recorded}, but model "
                         f"{spec.name!r} is configured with {json.dumps(preprocessing.as_dict())}")
    with batch_plan(args, model, settings, **{"top-N": topn_digest(topn), "layer": layer,
                                              "preprocessing": preprocessing.as_dict()}) as plan:
        start = time.perf_counter()
        patches, info = find_patches(model, layer, topn, settings, preprocessing, resolve_device(args.device),
                                     plan=plan)
        seconds = time.perf_counter() - start
        attrs = {"layer": layer, "model": spec.name, "topn": str(args.topn), "checkpoint": str(args.checkpoint),
                 "source_store": topn.attrs.get("source_store", ""), "settings": to_json(settings), "info": info}
        if args.shard[1] > 1:
            selected = len(select_channels(settings.channels, topn.indices.shape[0], layer))
            write_patch_shard(args.out, patches, {**attrs, **plan.attrs(selected, settings.channel_batch)})
        else:
            write_patch_folder(args.out, patches, attrs)
    logging.getLogger("peekflow").info("wrote %s: %d patches for each of %d channels of %s (%s mode, %.1fs); %s",
                                       args.out, patches.rows.shape[1], len(patches.channels), layer,
                                       settings.mode, seconds, json.dumps(info))


if __name__ == "__main__":
    stage_main(__name__)

"""`peekflow semantics`: a model's classes mapped to WordNet 3.0 noun synsets, and their class x class matrices."""

from __future__ import annotations

from peekflow.cli import add_settings_argument, stage_main

HELP = """Map each class of a model to its WordNet 3.0 noun synset -- by its name where it is an ImageNet wnid (n + 8
digits: a noun offset), else by the `synsets` map of --settings -- and write to --out: synsets.csv (class, synset,
wnid, depth, definition), distance.csv (edges of the shortest path through a common hypernym), wup.csv (Wu-Palmer
similarity), lcs_depth.csv (depth of the lowest common subsumer), rows and columns in the model's class order, and
matrices.png. The class names come from the checkpoint where it records them, else from the model spec (classes,
classes_file, classes_from_folder); no network is built or run.
Example:
  peekflow semantics --model '{"name": "m", "arch": "small_resnet", "num_classes": 3}' \\
      --classes-of results/models/m/model.pt --settings '{"synsets": {"circle": "circle.n.01", ...}}' \\
      --out results/semantics/m"""


def add_arguments(p) -> None:
    from peekflow.semantics.settings import SemanticsSettings

    p.add_argument("--model", required=True, help="model spec as JSON (name, arch, num_classes, class names)")
    p.add_argument("--classes-of", required=True, metavar="CHECKPOINT",
                   help="the model's weights, read for its class names only (a peekflow checkpoint records them in "
                        "unit order; for another, --model's classes, classes_file or classes_from_folder)")
    add_settings_argument(p, SemanticsSettings)
    p.add_argument("--out", required=True, help="folder to write the table, the matrices and the figure into")


def run(args) -> None:
    import logging

    from peekflow.models.checkpoint import read_checkpoint
    from peekflow.models.spec import ModelSpec, resolve_classes
    from peekflow.semantics.files import map_classes
    from peekflow.semantics.settings import SemanticsSettings
    from peekflow.settings import parse_settings

    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = parse_settings(SemanticsSettings, args.settings, "--settings")
    meta = {k: v for k, v in read_checkpoint(args.classes_of).items() if k != "state_dict"}
    classes = resolve_classes(spec, meta)
    semantics = map_classes(args.out, classes, settings.synsets, settings.wordnet, model=spec.name)
    k = len(classes)
    logging.getLogger("peekflow").info("wrote %s: %d classes, depths %d-%d, mean WordNet distance between two %.2f",
                                       args.out, k, semantics.depth.min(), semantics.depth.max(),
                                       semantics.distance.sum() / max(1, k * (k - 1)))


if __name__ == "__main__":
    stage_main(__name__)

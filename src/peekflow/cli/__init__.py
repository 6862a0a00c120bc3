"""`peekflow <stage>`: one sub-command per workflow stage, each a thin wrapper around one library function.

Every stage module in this package defines `HELP`, `add_arguments(parser)` and `run(args)`. Only the chosen
stage's module is imported: start-up cost is paid by every Snakemake job, and torch alone takes seconds to import. A
stage module imports no other stage module: what several share is here (arguments, loading a model spec) or in a
private helper module (`_prototypes`: the prototype sub-commands').
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from peekflow.progress import setup_logging

STAGES = {
    "generate": "generate a synthetic data set (the embedded default's shapes, textures, noise)",
    "train": "train a classifier on an image folder",
    "extract": "extract logits and pooled layer features into an HDF5 feature store",
    "merge-features": "join the shard stores of a sharded extraction into one feature store",
    "merge-prototypes": "join the shard files of a sharded prototype synthesis into one prototype file",
    "dream": "DeepDream class prototypes: maximise each class logit under image priors (PEEK)",
    "deepinversion": "DeepInversion class prototypes: match batch-norm statistics (Yin et al.)",
    "quality": "classify prototypes by the target and an independent probe model",
    "probe": "PEEK probing: name each output unit from its prototypes with an independent probe model",
    "caricature": "caricatures: images whose layer response matches an amplified real image's",
    "topn": "top-N images per channel of a layer by spatial-max activation (from a feature store)",
    "patches": "top-k patches per channel among its top-N images (receptive-field map or sliding window)",
    "merge-patches": "join the shard files of a sharded patch search into its patch folder",
    "dora": "DORA: outlier neurons of a layer from their synthetic activation-maximisation signals",
    "merge-dora": "join the signal files of a sharded DORA run into its outlier table and figure",
    "invert": "INVERT: label each neuron of a layer with a boolean concept formula (AUC, Mann-Whitney p)",
    "vital": "VITAL: channel visualisations guided by the channel's top patches (relevance-weighted matching)",
    "atlas": "the neuron atlas: a static site of a model's neurons (top images, patches, DORA, INVERT)",
    "score": "fit an OOD detector and score feature stores",
    "gather-scores": "join one OOD method's score files (one per data set) into its score file",
    "table": "compute OOD metrics for every method and OOD set into the OOD table",
    "compare": "set the OOD table beside published tables (PEEK, OpenOOD v1.5): differences, inside the CI or not",
    "plot-ood": "ROC curves and score histograms of one OOD method's score file",
    "semantics": "map a model's classes to WordNet 3.0 synsets: class x class distance and similarity matrices",
    "probing-semantics": "judge PEEK probing against WordNet: accuracy by hypernym depth, distance, Mantel test",
    "dora-semantics": "DORA's evaluation: Mantel test of the output units' EA distance against WordNet distance",
    "summarise": "mean, std and n over the replicas (seeds) of each model: OOD table, prototype quality, probing",
    "emergence": "emergence of visual patterns: sample/regional embeddings and knowledge points per layer",
    "emergence-trajectory": "PGD attack on analysed images: their embeddings and knowledge points step by step",
}


def stage_parser(stage: str, prog: str):
    module = importlib.import_module(f"peekflow.cli.{stage.replace('-', '_')}")  # plot-ood -> cli/plot_ood.py
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(stage=stage)
    return parser, module


def add_device_argument(p) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")


def add_model_arguments(p, settings_cls=None, shard: str | None = None) -> None:
    """What the network stages share: the model (--checkpoint, --model), --settings of `settings_cls`, --device,
    --threads and, for a stage that shards (`shard`: what shard I of S makes), --shard."""
    p.add_argument("--checkpoint", required=True, help="model weights (peekflow checkpoint or a state dict)")
    p.add_argument("--model", required=True, help="model spec as JSON: name, arch, num_classes, preprocessing, ...")
    if settings_cls is not None:
        add_settings_argument(p, settings_cls)
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    if shard:
        p.add_argument("--shard", default="0/1", type=shard_arg,
                       help=f"I/S: {shard}; a killed job resumes from the batches it kept in <out>.partial/")


def load_model(args, settings_cls=None):
    """Set torch's threads (--threads), then (model spec, settings, model, class names) of --model, --settings (of
    `settings_cls`; None without) and --checkpoint."""
    from peekflow.device import set_threads
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.settings import parse_settings

    set_threads(args.threads)
    spec = parse_settings(ModelSpec, args.model, "--model")
    settings = None if settings_cls is None else parse_settings(settings_cls, args.settings, "--settings")
    model, classes = load_spec(spec, args.checkpoint)
    return spec, settings, model, classes


def batch_plan(args, model, settings, **inputs):
    """The job's shard (--shard) and partial folder (`<--out>.partial`), valid for a rerun with the same weights,
    settings, named `inputs`, shard and --device (peekflow.shards). Use it as `with batch_plan(...) as plan:` around
    making and writing the outputs (--out and those of --grid, --figure, --signals)."""
    from peekflow.shards import BatchPlan, partial_path, resume_key

    key = resume_key(model, args.device, settings, args.shard, **inputs)
    outputs = [path for name in ("grid", "figure", "signals") if (path := getattr(args, name, None))]
    return BatchPlan(shard=args.shard, partial=partial_path(args.out), key=key, outputs=outputs)


def add_settings_argument(p, settings_cls, required: bool = False) -> None:
    """--settings, a JSON object of `settings_cls`'s keys, listed with their help at the end of --help."""
    from peekflow.settings import describe

    p.add_argument("--settings", required=required, default=None if required else "{}",
                   help="JSON object of settings (the keys are listed below; absent keys take their default)")
    p.epilog = "settings (keys of --settings):\n" + describe(settings_cls)


def shard_arg(text: str) -> tuple[int, int]:
    """--shard I/S: shard I of S."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected I/S, e.g. 0/4")
    return int(index), int(count)


def named_paths(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """['name=path', ...] -> {name: path}; fail naming the flag on a malformed or repeated name."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {pair!r}: expected NAME=PATH")
        if name in out:
            raise ValueError(f"{flag}: name {name!r} given twice")
        out[name] = path
    return out


def load_model_spec(spec_json: str, checkpoint: str, where: str):
    """(model, preprocessing, class names) of a --model-style JSON spec (`where`: its flag) and its weights."""
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.settings import parse_settings

    spec = parse_settings(ModelSpec, spec_json, where)
    model, classes = load_spec(spec, checkpoint)
    return model, spec.preprocess(), classes


def store_model(path) -> str:
    """The model a feature store records ("" if none): figures made from a store name it in their titles."""
    from peekflow.features.store import open_store

    with open_store(path) as h5:
        return str(h5.attrs.get("model", ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in STAGES:
        top = argparse.ArgumentParser(
            prog="peekflow", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="stages:\n" + "\n".join(f"  {name:<13} {text}" for name, text in STAGES.items())
            + "\n\n`peekflow STAGE --help` describes a stage's arguments and settings.",
        )
        top.add_argument("stage", choices=list(STAGES), metavar="STAGE")
        top.parse_args(argv[:1])  # prints help or a usage error and exits
        return 2
    parser, module = stage_parser(argv[0], f"peekflow {argv[0]}")
    return run_stage(module.run, parser.parse_args(argv[1:]))


def run_stage(fn, args) -> int:
    setup_logging()
    try:
        fn(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, ImportError) as err:
        # Expected failures (bad input, bad settings): one clear line, no traceback noise.
        logging.getLogger("peekflow").error("%s", err)
        print(f"peekflow {getattr(args, 'stage', '')}: error: {err}", file=sys.stderr)
        return 1
    return 0


def stage_main(module_name: str) -> None:
    """`python -m peekflow.cli.<stage>` entry."""
    if module_name == "__main__":
        module_name = sys.modules["__main__"].__spec__.name
    stage = module_name.rsplit(".", 1)[-1]
    parser, module = stage_parser(stage, f"python -m {module_name}")
    sys.exit(run_stage(module.run, parser.parse_args()))

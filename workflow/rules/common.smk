# Helpers of the rules: config look-ups named for what they return, and one helper per file-path pattern. The config
# they read is checked and expanded (Snakefile); the workflow layer (peekflow.workflow) holds what has logic of its
# own: the checks, the targets of rule all, the resource requests.
import itertools
import json
import os
import re
import shlex

from peekflow.ood.base import detector_class
from peekflow.prototypes import methods as prototype_methods
from peekflow.semantics.settings import SemanticsSettings
from peekflow.workflow import config_checks, config_schema, targets
from peekflow.workflow.requests import Requests
from peekflow.workflow.targets import feature_store


def as_json(obj):
    """Canonical JSON for --settings/--model arguments (stable, so params compare equal across runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def stage_settings(path, **filled):
    """--settings JSON of the config block at `path` (e.g. labels.dora): the keys its settings class takes (defaults
    filled in by the schema; not the workflow's own keys), and `filled`."""
    return as_json(config_schema.settings_of(config, path, **filled))


def semantics_settings(keys):
    """--settings JSON of the semantics block: only the `keys` a command reads (SemanticsSettings.MAPPING, TESTS); a
    config without the block that asks for a semantics file by name gets the defaults (and the job's own checks)."""
    block = config_schema.settings_of(config, "semantics") if "semantics" in config else {}
    return as_json({key: block[key] for key in keys if key in block})


# file-path patterns (wildcards or values; and feature_store)
def prototype_file(model, method):
    return f"results/prototypes/{model}/{method}.h5"


def score_file(model, method):
    return f"results/ood/{model}/scores/{method}.h5"


def generated_sets():
    return sorted(config.get("generate", {}).get("sets", {}))


def dataset_images(name):
    """The image folder of data set `name`."""
    spec = config["datasets"][name]
    return spec["path"] if "path" in spec else f"resources/datasets/{spec['generated']}/{spec['split']}"


def dataset_input(name):
    """What a job reading data set `name` depends on: the generated set's attributes.csv, or the folder itself."""
    spec = config["datasets"][name]
    return spec["path"] if "path" in spec else f"resources/datasets/{spec['generated']}/attributes.csv"


def generate_settings(name):
    gen = config["generate"]
    spec = {k: v for k, v in gen["sets"][name].items() if k in ("splits", "classes")}
    return as_json({"seed": gen["seed"], "image_size": gen["image_size"], **spec})


def model_config(name):
    return config["models"][name]


MODEL_SPEC_KEYS = ["arch", "num_classes", "arch_kwargs", "preprocessing", "token_pool", "classes", "classes_file",
                   "classes_from_folder"]  # fmt: skip


def model_spec(name):
    """The --model JSON that peekflow train/extract take."""
    m = model_config(name)
    return as_json({"name": name, **{k: m[k] for k in MODEL_SPEC_KEYS if k in m}})


def model_checkpoint(name):
    m = model_config(name)
    return f"results/models/{name}/model.pt" if "train" in m else m["checkpoint"]


def extract_settings(model, layers=None, maps=None):
    """--settings JSON of an extraction: the extract block's settings, the layers (default: the model's) and the
    layers whose maps are stored."""
    return stage_settings("extract", layers=layers or model_config(model)["layers"], **({"maps": maps} if maps else {}))


def shards(section, name):
    """How many jobs share stage `name` of config section `section` (<section>.shards.<name>; 1: one job)."""
    return config.get(section, {}).get("shards", {}).get(name, 1)


def sharded_pattern(section, names, sharded, pattern=None):
    """Regex of the `names` (data sets, methods) of config section `section` made in shards (sharded=True) or by one
    job ("^$": none); `pattern` in place of the names where one count holds for all values (every layer)."""
    chosen = [name for name in names if (shards(section, name) > 1) == sharded]
    return (pattern if pattern and chosen else "|".join(chosen)) or "^$"


def dora_layer_pattern(sharded):
    """Regex of the layers whose DORA runs in shards (sharded=True: labels.shards.dora > 1) or in one job: every
    labelled layer alike, but the output layer that semantics judges (semantics.output_layer) always in one job, so
    that a shard count chosen for wide layers never exceeds its few batches. Every path of these rules has a `/`
    after {layer}."""
    output = targets.dora_output_layer(config)
    alike = sharded_pattern("labels", ["dora"], sharded, pattern="[^/]+")
    if not output or shards("labels", "dora") == 1:
        return alike
    return rf"(?!{re.escape(output)}/)[^/]+" if sharded else re.escape(output)


def shard_files(stem, n):
    """The shard files that a merge joins, in shard order."""
    return [f"{stem}/shard_{i}_of_{n}.h5" for i in range(n)]


def target_models():
    return config["target_models"]


def summary_reports(stage):
    """The per-replica JSON reports that summarise_<stage> reads."""
    return list(targets.summary_reports(config, stage).values())


def named_reports(stage, paths):
    return " ".join(f"{name}={path}" for name, path in zip(targets.summary_reports(config, stage), paths))


def ood_eval_sets():
    return [config["ood"]["id_test"], *config["ood"]["ood_sets"]]


def ood_runs():
    return config_checks.ood_runs(config)


def ood_group_args():
    """--group NAME=SET,SET arguments of `peekflow table` (ood.groups; none: no group rows)."""
    groups = config["ood"].get("groups", {})
    return " ".join(f"--group {name}={','.join(sets)}" for name, sets in groups.items())


def ood_run_method(run):
    return ood_runs()[run][0]


def ood_method_settings(run):
    return as_json(ood_runs()[run][1])


def score_inputs(wildcards):
    """What the job scoring data set `wildcards.dataset` reads: its feature store, plus the store it fits on (the ID
    train store, or the features of a prototype bank) for methods that fit; the checkpoint and the data set's image
    folder for methods that run the model (odin); the checkpoint for methods that read its weights (bn_gaussian).
    Nothing of the other data sets: adding one reruns no other job.
    """
    method = ood_run_method(wildcards.method)
    if detector_class(method).needs_images:
        return {"checkpoint": model_checkpoint(wildcards.model), "images": dataset_input(wildcards.dataset)}
    stores = {"store": feature_store(wildcards.model, wildcards.dataset)}
    if detector_class(method).needs_model:  # bn_gaussian: derived from the weights
        stores["checkpoint"] = model_checkpoint(wildcards.model)
    fit = config_checks.ood_fit_dataset(config, method)
    return stores | ({"fit": feature_store(wildcards.model, fit)} if fit else {})


def score_eval_args(wildcards, input):
    name, method = wildcards.dataset, detector_class(ood_run_method(wildcards.method))
    if not (method.needs_images or method.needs_model):
        return f"--eval {name}={input.store}"
    model = f"--model {shlex.quote(model_spec(wildcards.model))} --checkpoint {shlex.quote(input.checkpoint)}"
    if method.needs_images:
        return f"--images {name}={shlex.quote(dataset_images(name))} {model} --device {config['device']}"
    return f"--eval {name}={input.store} {model}"


def score_fit_args(wildcards, input):
    return f"--fit-store {input.fit}" if "fit" in input.keys() else ""


def model_made_prototypes():
    """The prototype methods made from the model alone (caricatures also draw reference images: rules of their own)."""
    return [m.name for m in prototype_methods.methods().values() if not m.references]


def prototype_command(method):
    """The `peekflow` sub-command that makes prototype method `method`."""
    return prototype_methods.method(method).command


def caricature_dataset():
    return config_checks.reference_dataset(config, "caricature")


def invert_store(wildcards):
    return feature_store(wildcards.model, config["labels"]["invert"]["dataset"])


def invert_attributes():
    """The attributes.csv of INVERT's data set: given, or the generated set's."""
    block = config["labels"]["invert"]
    return block.get("attributes") or dataset_input(block["dataset"])


def neuron_dataset():
    return config_checks.neuron_dataset(config)


def ranks_by_relevance():
    return config_checks.ranks_by_relevance(config)


def ranking_args(wildcards, input, threads):
    """`peekflow topn` ranks by activation from the store alone; by relevance it runs the model (neurons.ranking)."""
    if not ranks_by_relevance():
        return ""
    settings = stage_settings("neurons.ranking")
    return (
        f"--settings {shlex.quote(settings)} --model {shlex.quote(model_spec(wildcards.model))} "
        f"--checkpoint {shlex.quote(input.checkpoint)} --device {config['device']} --threads {threads}"
    )


def patch_figure_labels(wildcards):
    """Report label of a patch folder's figure: only overview.png is a report item (the per-channel grids are in the
    neuron atlas)."""
    return {"figure": f"all channels ({wildcards.figure})"}


def probe_args(wildcards, input):
    """VITAL's faithfulness measure reads the probe model's penultimate features (probe_model, when configured)."""
    probe = config.get("probe_model")
    if not probe:
        return ""
    return (
        f"--probe-model {shlex.quote(model_spec(probe))} --probe-checkpoint {shlex.quote(input.probe)} "
        f"--probe-layer {shlex.quote(model_config(probe)['penultimate'])}"
    )


def atlas_layers(model):
    """Layer -> the neuron outputs the atlas of `model` shows: top-N, patches and, on labelled layers, DORA, INVERT."""
    return targets.atlas_layers(config, model)


def atlas_files(wildcards):
    return [path for files in atlas_layers(wildcards.model).values() for path in files.values()]


def emergence_layers():
    return config.get("emergence", {}).get("layers", [])


def emergence_dataset():
    return config["emergence"]["dataset"]


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),
    generated="|".join(generated_sets()) or "^$",
    method="|".join(ood_runs()),
    proto="|".join(prototype_methods.methods()),


# Resource requests (mem_mb, runtime in minutes, cpus_per_task) of every job, from the config and the job's inputs:
# peekflow.workflow.requests.
job_resources = Requests(config).resources

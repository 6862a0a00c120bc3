# Helpers of the rules: config look-ups named for what they return, and one helper per file-path pattern. The config is
# checked before any job: its schema in the Snakefile, its cross-references here (peekflow.workflow.config_checks),
# then, once in the main process, its inputs and model shapes (peekflow.workflow.preflight). Every problem names its
# config key.
import functools
import itertools
import json
import math
import os
import shlex

from peekflow.ood.base import detector_class
from peekflow.workflow import config_checks, preflight, replicas, targets
from peekflow.workflow import resources as costs
from peekflow.workflow.config_checks import PROTOTYPE_COMMANDS

config_checks.check(config_checks.reference_problems(config))
replicas.expand(config)  # a model with train.seeds or a list of checkpoints -> one model per replica
if workflow.is_main_process:
    config_checks.check(preflight.input_problems(config), "config: inputs (checked before any job is submitted)")


def as_json(obj):
    """Canonical JSON for --settings/--model arguments (stable, so params compare equal across runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def settings_json(block, drop=()):
    """--settings JSON of a config block (defaults filled in by the schema), less the rule's own keys `drop`."""
    return as_json({k: v for k, v in (block or {}).items() if k not in drop})


# file-path patterns (wildcards or values)
def feature_store(model, dataset):
    return targets.feature_store(model, dataset)


def prototype_file(model, method):
    return f"results/prototypes/{model}/{method}.h5"


def score_file(model, method):
    return f"results/ood/{model}/scores/{method}.h5"


def generated_sets():
    return sorted(config.get("generate", {}).get("sets", {}))


def dataset_images(name):
    """The image folder of data set `name`."""
    spec = config["datasets"][name]
    if "path" in spec:
        return spec["path"]
    return f"resources/datasets/{spec['generated']}/{spec['split']}"


def dataset_input(name):
    """What a job reading data set `name` depends on: the generated set's attributes.csv, or the folder itself."""
    spec = config["datasets"][name]
    if "path" in spec:
        return spec["path"]
    return f"resources/datasets/{spec['generated']}/attributes.csv"


def generate_settings(name):
    gen = config["generate"]
    spec = gen["sets"][name]
    settings = {
        "seed": gen["seed"],
        "image_size": gen["image_size"],
        "splits": spec["splits"],
    }
    if "classes" in spec:
        settings["classes"] = spec["classes"]
    return as_json(settings)


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
    """--settings JSON of an extraction: the extract block less its workflow keys, the layers (default: the model's)
    and the layers whose maps are stored."""
    settings = {"layers": layers or model_config(model)["layers"], **({"maps": maps} if maps else {})}
    return settings_json({**config["extract"], **settings}, drop=("threads", "shards"))


def shards(section, name):
    """How many jobs share stage `name` of config section `section` (<section>.shards.<name>; 1: one job)."""
    return config.get(section, {}).get("shards", {}).get(name, 1)


def extract_shards(dataset):
    """How many jobs extract data set `dataset` (extract.shards; 1: one job writes its store)."""
    return shards("extract", dataset)


def datasets_pattern(sharded):
    """Regex of the data sets extracted in shards (sharded=True) or by one job."""
    names = [d for d in config["datasets"] if (extract_shards(d) > 1) == sharded]
    return "|".join(names) or "^$"


def feature_shards(wildcards):
    """The shard stores that merge_feature_shards joins, in shard order."""
    n = extract_shards(wildcards.dataset)
    stem = feature_store(wildcards.model, wildcards.dataset).removesuffix(".h5")
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
    method = detector_class(ood_run_method(wildcards.method))
    if method.needs_images:
        return {
            "checkpoint": model_checkpoint(wildcards.model),
            "images": dataset_input(wildcards.dataset),
        }
    stores = {"store": feature_store(wildcards.model, wildcards.dataset)}
    if method.needs_model:  # bn_gaussian: derived from the weights
        stores["checkpoint"] = model_checkpoint(wildcards.model)
    if method.needs_fit:
        bank = method.prototype_bank
        fit = f"prototypes_{bank}" if bank else config["ood"]["id_train"]
        stores["fit"] = feature_store(wildcards.model, fit)
    return stores


def score_eval_args(wildcards, input):
    name = wildcards.dataset
    if detector_class(ood_run_method(wildcards.method)).needs_images:
        model = shlex.quote(model_spec(wildcards.model))
        return (
            f"--images {name}={shlex.quote(dataset_images(name))} --model {model}"
            f" --checkpoint {shlex.quote(input.checkpoint)} --device {config['device']}"
        )
    if detector_class(ood_run_method(wildcards.method)).needs_model:
        model = shlex.quote(model_spec(wildcards.model))
        return f"--eval {name}={input.store} --model {model} --checkpoint {shlex.quote(input.checkpoint)}"
    return f"--eval {name}={input.store}"


def score_fit_args(wildcards, input):
    return f"--fit-store {input.fit}" if "fit" in input.keys() else ""


def prototype_shards(method):
    """How many jobs render prototype method `method` (prototypes.shards; 1: one job writes its file)."""
    return shards("prototypes", method)


def prototypes_pattern(sharded):
    """Regex of the prototype methods rendered in shards (sharded=True) or by one job."""
    names = [m for m in ("deepdream", "deepinversion") if (prototype_shards(m) > 1) == sharded]
    return "|".join(names) or "^$"


def caricature_pattern(sharded):
    """Regex matching "caricature" where caricatures are made in shards (sharded=True) or by one job; else nothing."""
    return "caricature" if (prototype_shards("caricature") > 1) == sharded else "^$"


def prototype_shard_files(wildcards):
    """The shard files that merge_prototype_shards joins, in shard order."""
    n = prototype_shards(wildcards.proto)
    return [f"results/prototypes/{wildcards.model}/{wildcards.proto}/shard_{i}_of_{n}.h5" for i in range(n)]


def prototype_settings(method):
    """--settings JSON of a prototype method: its config block less the rule's `dataset`."""
    return settings_json(config["prototypes"]["methods"][method], drop=("dataset",))


def caricature_dataset():
    return config_checks.caricature_dataset(config)


def dora_settings():
    return settings_json(config["labels"]["dora"])


def dora_shards():
    """How many jobs render the DORA signals of a layer (labels.shards.dora; 1: one job writes its table)."""
    return shards("labels", "dora")


def dora_layers_pattern(sharded):
    """Regex of the layers whose DORA signals are rendered in shards (sharded=True) or by one job."""
    return "[^/]+" if (dora_shards() > 1) == sharded else "^$"


def dora_shard_files(wildcards):
    """The signal files that merge_dora_signal_shards joins, in shard order."""
    n = dora_shards()
    stem = f"results/neurons/{wildcards.model}/{wildcards.layer}/dora"
    return [f"{stem}/shard_{i}_of_{n}.h5" for i in range(n)]


def invert_store(wildcards):
    return feature_store(wildcards.model, config["labels"]["invert"]["dataset"])


def invert_attributes():
    """The attributes.csv of INVERT's data set: given, or the generated set's."""
    block = config["labels"]["invert"]
    return block.get("attributes") or dataset_input(block["dataset"])


def invert_settings():
    return settings_json(config["labels"]["invert"], drop=("dataset", "attributes"))


def neuron_dataset():
    return config_checks.neuron_dataset(config)


def ranks_by_relevance():
    return config.get("neurons", {}).get("ranking", {}).get("rank_by") == "relevance"


def ranking_args(wildcards, input, threads):
    """`peekflow topn` ranks by activation from the store alone; by relevance it runs the model (neurons.ranking)."""
    if not ranks_by_relevance():
        return ""
    settings = settings_json(config["neurons"]["ranking"])
    return (
        f"--settings {shlex.quote(settings)} --model {shlex.quote(model_spec(wildcards.model))} "
        f"--checkpoint {shlex.quote(input.checkpoint)} --device {config['device']} --threads {threads}"
    )


def patch_settings():
    return settings_json(config["neurons"]["patches"])


def patch_shards():
    """How many jobs search the patches of a layer (neurons.shards.patches; 1: one job writes its folder)."""
    return shards("neurons", "patches")


def patch_layers_pattern(sharded):
    """Regex of the layers whose patches are searched in shards (sharded=True) or by one job."""
    return "[^/]+" if (patch_shards() > 1) == sharded else "^$"


def patch_shard_files(wildcards):
    """The shard files that merge_patch_shards joins, in shard order."""
    n = patch_shards()
    stem = f"results/neurons/{wildcards.model}/{wildcards.layer}/patch_shards"
    return [f"{stem}/shard_{i}_of_{n}.h5" for i in range(n)]


def patch_figure_labels(wildcards):
    """Report label of a patch folder's figure: only overview.png is a report item (the per-channel grids are in the
    neuron atlas)."""
    return {"figure": f"all channels ({wildcards.figure})"}


def vital_settings():
    return settings_json(config["neurons"]["vital"], drop=("layers",))


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


def atlas_mb(input):
    """MB the atlas job reads: its input files and the patches.h5 of its patch folders."""
    return existing_mb(input) + existing_mb([os.path.join(p, "patches.h5") for p in input if os.path.isdir(p)])


# emergence section: keys that are not settings of `peekflow emergence`
EMERGENCE_RULE_KEYS = ("dataset", "layers", "threads", "trajectory")


def emergence_layers():
    return config.get("emergence", {}).get("layers", [])


def emergence_dataset():
    return config["emergence"]["dataset"]


def emergence_extract_settings(model):
    """Settings of the emergence feature store: the usual extraction settings, the analysed layers, their maps."""
    return extract_settings(model, emergence_layers(), emergence_layers())


def emergence_settings():
    return settings_json(config["emergence"], drop=EMERGENCE_RULE_KEYS)


def emergence_trajectory_settings():
    return settings_json(config["emergence"]["trajectory"])


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),
    generated="|".join(generated_sets()) or "^$",
    method="|".join(ood_runs()),
    proto="|".join(PROTOTYPE_COMMANDS),


# Resource requests (mem_mb, runtime in minutes, cpus_per_task) of every rule, from the config and the job's inputs
# (peekflow.workflow.resources holds the formulas and their per-unit costs). In a dry run the inputs do not exist yet:
# counts come from the config (generated sets, prototypes, steps) and from the image folders; existing inputs' sizes
# only raise them. device: cuda sizes network rules for a GPU; auto and cpu for the CPU (a job never runs out of time
# for lack of a GPU).
@functools.lru_cache(maxsize=None)
def dataset_image_count(name):
    """Images of data set `name`: datasets.<name>.images where given, else as the checks before any job count them
    (a generated split's plan, a folder's images; 0 where the folder is not there yet). Cached: a folder is listed
    once per Snakemake process."""
    return config["datasets"][name].get("images") or preflight.dataset_size(config, name) or 0


def generated_image_count(generated):
    gen = config["generate"]["sets"][generated]
    return sum(gen["splits"].values()) * len(gen.get("classes", [None]))


def image_side(model, dataset=None):
    """The side of the images `model` sees from `dataset` (default: its training set): its crop or resize, else the
    generated size; else 224."""
    m = model_config(model)
    dataset = dataset or m.get("train", {}).get("dataset")
    return preflight.input_size(config, dataset, m) or config.get("generate", {}).get("image_size", 224)


@functools.lru_cache(maxsize=None)
def layer_channels(model, layer):
    """Channels (or token width) of a layer of `model`, from one forward pass of the built architecture."""
    import torch

    from peekflow.models.layers import record_layers

    m = model_config(model)
    net = preflight.abstract_model(m["arch"], m["num_classes"], m.get("arch_kwargs")).eval()
    side = image_side(model)
    with torch.no_grad(), record_layers(net, [layer]) as acts:
        net(torch.zeros(1, 3, side, side))
    return int(acts[layer].shape[1] if acts[layer].ndim == 4 else acts[layer].shape[-1])


def existing_mb(paths):
    """MB of the input files that exist (a dry run's are mostly missing: 0)."""
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p)) / 1e6


def on_gpu():
    return str(config["device"]).startswith("cuda")


def prototype_count(model, method):
    block = config["prototypes"]["methods"][method]
    return block.get("n") or block.get("per_class", 2) * model_config(model)["num_classes"]


def prototype_side(model, method):
    return config["prototypes"]["methods"][method].get("size") or image_side(model)


def prototype_work(model, method, shards=1):
    block = config["prototypes"]["methods"][method]
    side = prototype_side(model, method)
    n = math.ceil(prototype_count(model, method) / shards)
    return costs.synthesis(n, block.get("steps", 200), side, block.get("batch_size", 64))


def score_work(w, input):
    method = ood_run_method(w.method)
    n_eval = dataset_image_count(w.dataset)
    if detector_class(method).needs_images:  # ODIN: forward, backward, forward per image
        return costs.forward(n_eval, image_side(w.model, w.dataset), config["extract"]["batch_size"], 3)
    bank = detector_class(method).prototype_bank
    n_fit = 0
    if "fit" in input.keys():
        n_fit = prototype_count(w.model, bank) if bank else dataset_image_count(config["ood"]["id_train"])
    m = model_config(w.model)
    dim = layer_channels(w.model, m["penultimate"])
    return costs.scoring(n_fit, n_eval, dim, m["num_classes"], pairwise=method.startswith(("knn", "nnguide")))


def neuron_channels(w):
    chosen = config["neurons"]["patches"].get("channels", "all")
    return len(chosen) if isinstance(chosen, list) else layer_channels(w.model, w.layer)


def rank_work(w, i):
    images = dataset_image_count(neuron_dataset())
    if ranks_by_relevance():  # a forward and a backward pass (about 3 forwards) over the ranked images
        return costs.forward(images, image_side(w.model, neuron_dataset()), 64, 3)
    return costs.files(max(existing_mb(i), images * costs.STORE_KB_PER_IMAGE / 1000), held=0)


def patch_work(w, shards=1):
    side = image_side(w.model, neuron_dataset())
    patches = config["neurons"]["patches"]
    passes = 29 if patches.get("mode") == "window" else 1  # benchmarks/patches_speed.py
    channels = math.ceil(neuron_channels(w) / shards)
    return costs.forward(channels * config["neurons"]["topn"], side, patches["batch_size"], passes)


def vital_work(w):
    from peekflow.neurons.patches import select_channels

    vital = config["neurons"]["vital"]
    chosen = vital.get("channels", "all")
    channels = neuron_channels(w) if chosen == "all" else len(select_channels(chosen, 1 << 30, w.layer))
    # the plain render and the VITAL render, whose steps also run a relevance pass (about 3x a plain step)
    return costs.synthesis(
        4 * channels, vital.get("steps", 96), vital.get("size") or image_side(w.model), vital.get("batch_size", 16)
    )


def dora_work(w, shards=1):
    dora = config["labels"]["dora"]
    n = math.ceil(layer_channels(w.model, w.layer) / shards) * dora["per_neuron"] * (1 + dora["restarts"])
    return costs.synthesis(n, dora["steps"], dora.get("size") or image_side(w.model), dora["batch_size"])


def emergence_images(model):
    return config["emergence"]["per_class"] * model_config(model)["num_classes"]


# rule -> (wildcards, input) -> (seconds of one CPU thread, MB, whether it runs a network, loader workers)
RULE_WORK = {
    "generate_dataset": lambda w, i: (*costs.generation(generated_image_count(w.generated)), False, 0),
    "train_model": lambda w, i: (
        *costs.training(
            dataset_image_count(model_config(w.model)["train"]["dataset"]),
            model_config(w.model)["train"]["settings"].get("epochs", 10),
            image_side(w.model, model_config(w.model)["train"]["dataset"]),
            model_config(w.model)["train"]["settings"].get("batch_size", 64),
        ),
        True,
        model_config(w.model)["train"]["settings"].get("num_workers", 0),
    ),
    "extract_features": lambda w, i: (
        *costs.forward(dataset_image_count(w.dataset), image_side(w.model, w.dataset), config["extract"]["batch_size"]),
        True,
        config["extract"]["num_workers"],
    ),
    "extract_feature_shard": lambda w, i: (
        *costs.forward(
            math.ceil(dataset_image_count(w.dataset) / int(w.shards)),
            image_side(w.model, w.dataset),
            config["extract"]["batch_size"],
        ),
        True,
        config["extract"]["num_workers"],
    ),
    "merge_feature_shards": lambda w, i: (
        *costs.files(max(existing_mb(i), dataset_image_count(w.dataset) * costs.STORE_KB_PER_IMAGE / 1000), held=0),
        False,
        0,
    ),
    "extract_prototype_features": lambda w, i: (
        *costs.forward(
            prototype_count(w.model, w.proto), prototype_side(w.model, w.proto), config["extract"]["batch_size"]
        ),
        True,
        0,
    ),
    "synthesize_prototypes": lambda w, i: (*prototype_work(w.model, w.proto), True, 0),
    "synthesize_prototype_shard": lambda w, i: (*prototype_work(w.model, w.proto, int(w.shards)), True, 0),
    "merge_prototype_shards": lambda w, i: (*costs.files(existing_mb(i)), False, 0),
    "synthesize_caricatures": lambda w, i: (*prototype_work(w.model, "caricature"), True, 0),
    "synthesize_caricature_shard": lambda w, i: (*prototype_work(w.model, "caricature", int(w.shards)), True, 0),
    "evaluate_prototypes": lambda w, i: (
        *costs.forward(prototype_count(w.model, w.proto), prototype_side(w.model, w.proto), 64, 2),
        True,
        0,
    ),
    "probe_prototypes": lambda w, i: (
        *costs.forward(prototype_count(w.model, config["probing"]["prototypes"]), image_side(w.probe), 64),
        True,
        0,
    ),
    "score_ood": lambda w, i: (*score_work(w, i), detector_class(ood_run_method(w.method)).gpu_helps, 0),
    "rank_top_images": lambda w, i: (*rank_work(w, i), ranks_by_relevance(), 0),
    "extract_patches": lambda w, i: (*patch_work(w), True, 0),
    "extract_patch_shard": lambda w, i: (*patch_work(w, int(w.shards)), True, 0),
    "find_outlier_neurons": lambda w, i: (*dora_work(w), True, 0),
    "synthesize_dora_signal_shard": lambda w, i: (*dora_work(w, int(w.shards)), True, 0),
    "label_neurons": lambda w, i: (
        *costs.files(dataset_image_count(config["labels"]["invert"]["dataset"]) * costs.STORE_KB_PER_IMAGE / 1000),
        False,
        0,
    ),
    "run_vital": lambda w, i: (*vital_work(w), True, 0),
    "build_atlas": lambda w, i: (*costs.files(atlas_mb(i), held=1), False, 0),
    "extract_emergence_maps": lambda w, i: (
        *costs.forward(
            emergence_images(w.model), image_side(w.model, emergence_dataset()), config["extract"]["batch_size"]
        ),
        True,
        0,
    ),
    "analyse_emergence": lambda w, i: (
        *costs.embedding(
            emergence_images(w.model) * len(emergence_layers()),
            sum(config["emergence"][k] for k in ("sample_steps", "importance_steps", "regional_steps")),
        ),
        False,
        0,
    ),
    "trace_emergence_attack": lambda w, i: (
        *costs.forward(
            config["emergence"]["trajectory"]["images"],
            image_side(w.model),
            64,
            3 * config["emergence"]["trajectory"]["steps"],
        ),
        True,
        0,
    ),
}


def job_request(rule_name, wildcards, input, threads, attempt):
    seconds, mb, network, workers = RULE_WORK.get(rule_name, lambda w, i: (*costs.files(existing_mb(i)), False, 0))(
        wildcards, input
    )
    return costs.request(seconds, mb, threads=threads, gpu=network and on_gpu(), workers=workers, attempt=attempt)


def job_resources(rule_name):
    """resources: **job_resources("<rule>"): mem_mb, runtime and cpus_per_task computed when the job is planned."""
    return {
        key: lambda wildcards, input, threads, attempt, key=key: job_request(
            rule_name, wildcards, input, threads, attempt
        )[key]
        for key in ("mem_mb", "runtime", "cpus_per_task")
    }

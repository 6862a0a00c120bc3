# Helpers of the rules: config look-ups named for what they return, and one helper per file-path pattern. The config is
# checked before any job: its schema in the Snakefile, its cross-references here (peekflow.workflow.config_checks),
# then, once in the main process, its inputs and model shapes (peekflow.workflow.preflight). Every problem names its
# config key.
import itertools
import json
import shlex

from peekflow.ood.base import detector_class
from peekflow.prototypes import methods as prototype_methods
from peekflow.workflow import config_checks, preflight, replicas, targets
from peekflow.workflow.requests import Requests

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
    """Regex of the prototype methods made from the model alone (not from reference images: caricatures) in shards
    (sharded=True) or by one job."""
    methods = [m.name for m in prototype_methods.methods().values() if not m.references]
    return "|".join(m for m in methods if (prototype_shards(m) > 1) == sharded) or "^$"


def caricature_pattern(sharded):
    """Regex matching "caricature" where caricatures are made in shards (sharded=True) or by one job; else nothing."""
    return "caricature" if (prototype_shards("caricature") > 1) == sharded else "^$"


def prototype_shard_files(wildcards):
    """The shard files that merge_prototype_shards joins, in shard order."""
    n = prototype_shards(wildcards.proto)
    return [f"results/prototypes/{wildcards.model}/{wildcards.proto}/shard_{i}_of_{n}.h5" for i in range(n)]


def prototype_command(method):
    """The `peekflow` sub-command that makes prototype method `method`."""
    return prototype_methods.method(method).command


def prototype_settings(method):
    """--settings JSON of a prototype method: its config block less the workflow's keys (a reference data set)."""
    return settings_json(config["prototypes"]["methods"][method], drop=prototype_methods.method(method).workflow_keys)


def caricature_dataset():
    return config_checks.reference_dataset(config, "caricature")


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
    return config_checks.ranks_by_relevance(config)


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
    proto="|".join(prototype_methods.methods()),


# Resource requests (mem_mb, runtime in minutes, cpus_per_task) of every job, from the config and the job's inputs:
# peekflow.workflow.requests.
job_resources = Requests(config).resources

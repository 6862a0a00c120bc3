# Helpers of the rules: config look-ups named for what they return, and one helper per file-path pattern. The config
# is checked before any job: its schema in the Snakefile, its cross-references here (peekflow.config_checks), then,
# once in the main process, its inputs and model shapes (peekflow.preflight). Every problem names its config key.
import json
import shlex

from peekflow import config_checks, preflight
from peekflow.config_checks import PROTOTYPE_COMMANDS
from peekflow.ood.base import detector_class

config_checks.check(config_checks.reference_problems(config))
if workflow.is_main_process:
    config_checks.check(preflight.input_problems(config), "config: inputs (checked before any job is submitted)")


def as_json(obj):
    """Canonical JSON for --settings/--model arguments (stable, so params compare equal across runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# file-path patterns (wildcards or values)
def feature_store(model, dataset):
    return f"results/features/{model}/{dataset}.h5"


def prototype_file(model, method):
    return f"results/prototypes/{model}/{method}.h5"


def generated_sets():
    return sorted(config.get("generate", {}).get("sets", {}))


def trained_models():
    return sorted(m for m, spec in config["models"].items() if "train" in spec)


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


MODEL_SPEC_KEYS = ["arch", "num_classes", "arch_kwargs", "preprocessing", "classes", "classes_file",
                   "classes_from_folder"]  # fmt: skip


def model_spec(name):
    """The --model JSON that peekflow train/extract take."""
    m = model_config(name)
    return as_json({"name": name, **{k: m[k] for k in MODEL_SPEC_KEYS if k in m}})


def model_checkpoint(name):
    m = model_config(name)
    return f"results/models/{name}/model.pt" if "train" in m else m["checkpoint"]


def extract_settings(model, layers=None, maps=None):
    e = config["extract"]
    keys = ["batch_size", "num_workers", "amp", "skip_corrupt"]
    settings = {
        "layers": layers or model_config(model)["layers"],
        "device": config["device"],
    }
    if maps:
        settings["maps"] = maps
    return as_json({**settings, **{k: e[k] for k in keys}})


def extract_shards(dataset):
    """How many jobs extract data set `dataset` (extract.shards; 1: one job writes its store)."""
    return config["extract"].get("shards", {}).get(dataset, 1)


def datasets_pattern(sharded):
    """Regex of the data sets extracted in shards (sharded=True) or by one job."""
    names = [d for d in config["datasets"] if (extract_shards(d) > 1) == sharded]
    return "|".join(names) or "^$"


def feature_shards(wildcards):
    """The shard stores that merge_feature_shards joins, in shard order."""
    n = extract_shards(wildcards.dataset)
    stem = feature_store(wildcards.model, wildcards.dataset).removesuffix(".h5")
    return [f"{stem}/shard_{i}_of_{n}.h5" for i in range(n)]


def target_model():
    return config["target_model"]


def ood_eval_sets():
    return [config["ood"]["id_test"], *config["ood"]["ood_sets"]]


def ood_runs():
    return config_checks.ood_runs(config)


def ood_figures():
    """ROC curve and score histogram PNGs of every OOD method on the target model."""
    return expand(
        "results/ood/{model}/figures/{method}_{kind}.png", model=target_model(), method=ood_runs(), kind=["roc", "hist"]
    )


def ood_run_method(run):
    return ood_runs()[run][0]


def ood_method_settings(run):
    return as_json(ood_runs()[run][1])


def score_inputs(wildcards):
    """What the job scoring data set `wildcards.dataset` reads: its feature store, plus the store it fits on (the ID
    train store, or the features of a prototype bank) for methods that fit; the checkpoint and the data set's image
    folder for methods that run the model (odin). Nothing of the other data sets: adding one reruns no other job.
    """
    method = detector_class(ood_run_method(wildcards.method))
    if method.needs_images:
        return {
            "checkpoint": model_checkpoint(wildcards.model),
            "images": dataset_input(wildcards.dataset),
        }
    stores = {"store": feature_store(wildcards.model, wildcards.dataset)}
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
    return f"--eval {name}={input.store}"


def score_fit_args(wildcards, input):
    return f"--fit-store {input.fit}" if "fit" in input.keys() else ""


def prototype_methods():
    return sorted(config.get("prototypes", {}).get("methods", {}))


def prototype_settings(method):
    """--settings JSON of a prototype method: its config block (less the rule's `dataset`) plus the device."""
    block = dict(config["prototypes"]["methods"][method] or {})
    block.pop("dataset", None)
    return as_json({"device": config["device"], **block})


def caricature_dataset():
    return config_checks.caricature_dataset(config)


def prototype_outputs():
    """Everything `rule all` wants from the prototype stage of the target model (none if not configured)."""
    return expand(
        "results/prototypes/{model}/{proto}{suffix}",
        model=target_model(),
        proto=prototype_methods(),
        suffix=[".h5", ".png", "_quality.json"],
    )


def probing_outputs():
    """results/probing/<target>/<probe>/...: PEEK probing of the target's prototypes (none if not configured)."""
    if "probing" not in config:
        return []
    return expand(
        "results/probing/{model}/{probe}/{name}",
        model=target_model(),
        probe=config["probe_model"],
        name=["similarity.csv", "similarity.png", "probing.json"],
    )


def label_outputs():
    """results/neurons/<target>/<layer>/dora.* and invert.*: neuron labels (none if `labels` is absent)."""
    labels = config.get("labels")
    if not labels:
        return []
    methods = [m for m in ("dora", "invert") if m in labels]
    return expand(
        "results/neurons/{model}/{layer}/{method}.{ext}",
        model=target_model(),
        layer=labels["layers"],
        method=methods,
        ext=["csv", "png"],
    )


def dora_settings():
    return as_json({"device": config["device"], **(config["labels"]["dora"] or {})})


def invert_store(wildcards):
    return feature_store(wildcards.model, config["labels"]["invert"]["dataset"])


def invert_attributes():
    """The attributes.csv of INVERT's data set: given, or the generated set's."""
    block = config["labels"]["invert"]
    return block.get("attributes") or dataset_input(block["dataset"])


def invert_settings():
    block = config["labels"]["invert"]
    return as_json({k: v for k, v in block.items() if k not in ("dataset", "attributes")})


def neuron_dataset():
    return config_checks.neuron_dataset(config)


def patch_settings():
    return as_json({"device": config["device"], **config["neurons"]["patches"]})


def patch_figure_labels(wildcards):
    """Report label of a PNG in a patch folder: the overview first, then the channels in numeric order (the report
    sorts labels as text, hence the zero padding)."""
    name = wildcards.figure
    if name.startswith("channel_"):
        return {"figure": f"channel {int(name.removeprefix('channel_')):04d}"}
    return {"figure": f"all channels ({name})"}


def neuron_outputs():
    """results/neurons/<target>/<layer>/topn.h5 and patches/ (none if `neurons` is absent)."""
    if "neurons" not in config:
        return []
    return expand(
        "results/neurons/{model}/{layer}/{out}",
        model=target_model(),
        layer=config_checks.neuron_layers(config),
        out=["topn.h5", "patches"],
    )


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
    block = config["emergence"]
    settings = {k: v for k, v in block.items() if k not in EMERGENCE_RULE_KEYS}
    return as_json({"device": config["device"], **settings})


def emergence_trajectory_settings():
    return as_json({"device": config["device"], **config["emergence"]["trajectory"]})


def emergence_outputs():
    """results/emergence/<target>/...: per-layer files and figures, the knowledge-point curve, the PGD trajectory
    (none if `emergence` is absent)."""
    if "emergence" not in config:
        return []
    names = [f"{layer}.{ext}" for layer in emergence_layers() for ext in ("h5", "png")]
    names += [f"knowledge_points.{ext}" for ext in ("csv", "json", "png")]
    names += ["trajectory.h5", "trajectory.png"]
    return expand("results/emergence/{model}/{name}", model=target_model(), name=names)


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),
    generated="|".join(generated_sets()) or "^$",
    method="|".join(ood_runs()),
    proto="|".join(PROTOTYPE_COMMANDS),

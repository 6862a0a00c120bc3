# Helpers shared by the rules: config look-ups (named for what they return) and cross-checks of the config that
# the JSON schema cannot express. Everything here fails before any job runs, naming the key at fault.
import json
import shlex

from peekflow.ood.base import build as build_detector, detector_class


class ConfigError(ValueError):
    pass


def _need(mapping, key, where):
    if key not in mapping:
        raise ConfigError(
            f"config: {where} names {key!r}, which is not defined; defined: {sorted(mapping)}"
        )
    return mapping[key]


def as_json(obj):
    """Canonical JSON for --settings/--model arguments (stable, so params compare equal across runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def generated_sets():
    return sorted(config.get("generate", {}).get("sets", {}))


def trained_models():
    return sorted(m for m, spec in config["models"].items() if "train" in spec)


def dataset_images(name):
    """The image folder of data set `name`."""
    spec = _need(config["datasets"], name, "a rule")
    if "path" in spec:
        return spec["path"]
    return f"resources/datasets/{spec['generated']}/{spec['split']}"


def dataset_input(name):
    """What a job reading data set `name` depends on: the generated set's attributes.csv, or the folder itself."""
    spec = _need(config["datasets"], name, "a rule")
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
    return _need(config["models"], name, "a rule")


def model_spec(name):
    """The --model JSON that peekflow train/extract take."""
    m = model_config(name)
    keys = [
        "arch",
        "num_classes",
        "arch_kwargs",
        "preprocessing",
        "classes",
        "classes_file",
        "classes_from_folder",
    ]
    return as_json({"name": name, **{k: m[k] for k in keys if k in m}})


def model_checkpoint(name):
    m = model_config(name)
    return f"results/models/{name}/model.pt" if "train" in m else m["checkpoint"]


def extract_settings(model):
    e = config["extract"]
    keys = ["batch_size", "num_workers", "amp", "skip_corrupt"]
    return as_json(
        {
            "layers": model_config(model)["layers"],
            "device": config["device"],
            **{k: e[k] for k in keys},
        }
    )


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
    return [
        f"results/features/{wildcards.model}/{wildcards.dataset}/shard_{i}_of_{n}.h5"
        for i in range(n)
    ]


def target_model():
    return config["target_model"]


def ood_eval_sets():
    return [config["ood"]["id_test"], *config["ood"]["ood_sets"]]


def ood_figures():
    """ROC curve and score histogram PNGs of every OOD method on the target model."""
    return expand(
        "results/ood/{model}/figures/{method}_{kind}.png",
        model=target_model(),
        method=ood_runs(),
        kind=["roc", "hist"],
    )


def ood_runs():
    """The OOD table's score files: run name -> (method, settings). A list of k (KNN methods) is a sweep: one run per
    k, named <method>_k<k>; otherwise the run is named after its method."""
    runs = {}
    for method, settings in config["ood"]["methods"].items():
        settings = dict(settings or {})
        if isinstance(settings.get("k"), list):
            for k in settings["k"]:
                runs[f"{method}_k{k}"] = (method, {**settings, "k": k})
        else:
            runs[method] = (method, settings)
    return runs


def ood_run_method(run):
    return _need(ood_runs(), run, "ood.methods")[0]


def ood_method_settings(run):
    return as_json(_need(ood_runs(), run, "ood.methods")[1])


# prototype method (config key and file name) -> the peekflow sub-command that makes it
PROTOTYPE_COMMANDS = {
    "deepdream": "dream",
    "deepinversion": "deepinversion",
    "caricature": "caricature",
}


def prototype_methods():
    return sorted(config.get("prototypes", {}).get("methods", {}))


def prototype_settings(method):
    """--settings JSON of a prototype method: its config block (less the rule's `dataset`) plus the device."""
    block = dict(config["prototypes"]["methods"][method] or {})
    block.pop("dataset", None)
    return as_json({"device": config["device"], **block})


def caricature_dataset():
    """The data set caricatures draw their reference images from (default: the ID test set)."""
    block = config["prototypes"]["methods"].get("caricature") or {}
    return block.get("dataset", config["ood"]["id_test"])


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


def prototype_outputs():
    """Everything `rule all` wants from the prototype stage of the target model (none if not configured)."""
    if not prototype_methods():
        return []
    return expand(
        "results/prototypes/{model}/{proto}{suffix}",
        model=target_model(),
        proto=prototype_methods(),
        suffix=[".h5", ".png", "_quality.json"],
    )


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
    stores = {"store": f"results/features/{wildcards.model}/{wildcards.dataset}.h5"}
    if method.needs_fit:
        bank = method.prototype_bank
        fit = f"prototypes_{bank}" if bank else config["ood"]["id_train"]
        stores["fit"] = f"results/features/{wildcards.model}/{fit}.h5"
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
    dataset = config["labels"]["invert"]["dataset"]
    return f"results/features/{wildcards.model}/{dataset}.h5"


def invert_attributes():
    """The attributes.csv of INVERT's data set: given, or the generated set's."""
    block = config["labels"]["invert"]
    return block.get("attributes") or dataset_input(block["dataset"])


def invert_settings():
    block = config["labels"]["invert"]
    return as_json(
        {k: v for k, v in block.items() if k not in ("dataset", "attributes")}
    )


def check_labels_config():
    labels = config.get("labels")
    if not labels or "invert" not in labels:
        return
    block = labels["invert"]
    spec = _need(config["datasets"], block["dataset"], "labels.invert.dataset")
    if "path" in spec and "attributes" not in block:
        raise ConfigError(
            f"config: labels.invert.dataset {block['dataset']!r} is a folder of your own: name its attributes.csv "
            "in labels.invert.attributes"
        )
    stored = model_config(target_model())["layers"]
    missing = [layer for layer in labels["layers"] if layer not in stored]
    if missing:
        raise ConfigError(
            f"config: labels.layers {missing} are not in models.{target_model()}.layers {stored} "
            "(INVERT reads them from the feature store)"
        )


def neuron_layers():
    """Layers of the target whose channels get top-N images and patches (default: its configured layers)."""
    return config["neurons"].get("layers") or model_config(target_model())["layers"]


def neuron_dataset():
    """The data set whose feature store ranks the images (default: the ID training set)."""
    return config["neurons"].get("dataset") or config["ood"]["id_train"]


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
        layer=neuron_layers(),
        out=["topn.h5", "patches"],
    )


def check_neurons_config():
    if "neurons" not in config:
        return
    _need(config["datasets"], neuron_dataset(), "neurons.dataset")
    stored = model_config(target_model())["layers"]
    missing = [layer for layer in neuron_layers() if layer not in stored]
    if missing:
        raise ConfigError(
            f"config: neurons.layers {missing} are not in models.{target_model()}.layers {stored} "
            "(top-N reads them from the feature store)"
        )


# emergence section: keys that are not settings of `peekflow emergence`
EMERGENCE_RULE_KEYS = ("dataset", "layers", "threads", "trajectory")


def emergence_layers():
    return config.get("emergence", {}).get("layers", [])


def emergence_dataset():
    return config["emergence"]["dataset"]


def emergence_extract_settings(model):
    """Settings of the emergence feature store: the usual extraction settings, the analysed layers, their maps."""
    settings = json.loads(extract_settings(model))
    return as_json(
        {**settings, "layers": emergence_layers(), "maps": emergence_layers()}
    )


def emergence_settings():
    block = config["emergence"]
    return as_json(
        {
            "device": config["device"],
            **{k: v for k, v in block.items() if k not in EMERGENCE_RULE_KEYS},
        }
    )


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


def check_emergence_config():
    if "emergence" not in config:
        return
    _need(config["datasets"], emergence_dataset(), "emergence.dataset")
    layers = emergence_layers()
    if len(set(layers)) != len(layers):
        raise ConfigError(f"config: emergence.layers repeat a layer: {layers}")


def check_config():
    """Cross-references: every name a key mentions must exist."""
    for name, spec in config["datasets"].items():
        if "generated" in spec:
            gen = _need(
                config.get("generate", {}).get("sets", {}),
                spec["generated"],
                f"datasets.{name}.generated",
            )
            if spec["split"] not in gen["splits"]:
                raise ConfigError(
                    f"config: datasets.{name}.split {spec['split']!r} is not a split of generate.sets."
                    f"{spec['generated']} (splits: {sorted(gen['splits'])})"
                )
    for name, spec in config.get("generate", {}).get("sets", {}).items():
        if spec["kind"] == "shapes" and "classes" not in spec:
            raise ConfigError(
                f"config: generate.sets.{name} is of kind shapes and needs `classes`"
            )
    for name, m in config["models"].items():
        if m["penultimate"] not in m["layers"]:
            raise ConfigError(
                f"config: models.{name}.penultimate {m['penultimate']!r} must be one of its layers"
            )
        if "train" in m:
            _need(
                config["datasets"],
                m["train"]["dataset"],
                f"models.{name}.train.dataset",
            )
            _need(
                config["datasets"],
                m["train"]["val_dataset"],
                f"models.{name}.train.val_dataset",
            )
    for name in config["extract"].get("shards", {}):
        _need(config["datasets"], name, "extract.shards")
    for key in ("target_model", "probe_model"):
        if key in config:
            _need(config["models"], config[key], key)
    ood = config["ood"]
    for key in ("id_train", "id_test"):
        _need(config["datasets"], ood[key], f"ood.{key}")
    for name in ood["ood_sets"]:
        _need(config["datasets"], name, "ood.ood_sets")
    for method in prototype_methods():
        if method not in PROTOTYPE_COMMANDS:
            raise ConfigError(
                f"config: prototypes.methods names {method!r}; valid methods: {sorted(PROTOTYPE_COMMANDS)}"
            )
    if "caricature" in prototype_methods():
        _need(
            config["datasets"],
            caricature_dataset(),
            "prototypes.methods.caricature.dataset",
        )
    if "probing" in config:
        probing = config["probing"]
        if probing["prototypes"] not in prototype_methods():
            raise ConfigError(
                f"config: probing.prototypes {probing['prototypes']!r} is not one of prototypes.methods "
                f"{prototype_methods()}"
            )
        _need(config["datasets"], probing["known"], "probing.known")
    if prototype_methods() and "probe_model" not in config:
        raise ConfigError(
            "config: prototypes need a probe_model (the transfer check of evaluate_prototypes)"
        )
    if ood["id_train"] == ood["id_test"]:
        raise ConfigError(
            "config: ood.id_train and ood.id_test must differ (the KNN bank must not hold test images)"
        )
    for method, settings in ood["methods"].items():
        if (settings or {}).get("k") == []:
            raise ConfigError(f"config: ood.methods.{method}.k is an empty list")
    for method, settings in ood_runs().values():
        try:
            build_detector(
                method, settings
            )  # unknown methods, settings or values fail here, before any job
        except ValueError as err:
            raise ConfigError(f"config: ood.methods: {err}") from None
        bank = detector_class(method).prototype_bank
        if bank and bank not in prototype_methods():
            raise ConfigError(
                f"config: ood.methods.{method} fits on {bank} prototypes: configure prototypes.methods.{bank}"
            )


check_config()
# after check_config: the target model and data sets they name exist
check_labels_config()
check_neurons_config()
check_emergence_config()


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),
    generated="|".join(generated_sets()) or "^$",
    method="|".join(ood_runs()),
    proto="|".join(PROTOTYPE_COMMANDS),

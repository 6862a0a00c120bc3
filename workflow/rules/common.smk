# Helpers shared by the rules: config look-ups (named for what they return) and cross-checks of the config that
# the JSON schema cannot express. Everything here fails before any job runs, naming the key at fault.
import json

from peekflow.ood.base import detector_class


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


def target_model():
    return config["target_model"]


def ood_eval_sets():
    return [config["ood"]["id_test"], *config["ood"]["ood_sets"]]


def ood_method_settings(method):
    settings = dict(_need(config["ood"]["methods"], method, "ood.methods") or {})
    return as_json(settings)


# prototype method (config key and file name) -> the peekflow sub-command that makes it
PROTOTYPE_COMMANDS = {"deepdream": "dream", "deepinversion": "deepinversion"}


def prototype_methods():
    return sorted(config.get("prototypes", {}).get("methods", {}))


def prototype_settings(method):
    """--settings JSON of a prototype method: its config block plus the device."""
    return as_json({"device": config["device"], **(config["prototypes"]["methods"][method] or {})})


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
    """Feature stores a score job reads: the ID train store only for methods that fit on it."""
    stores = {
        name: f"results/features/{wildcards.model}/{name}.h5"
        for name in ood_eval_sets()
    }
    if detector_class(wildcards.method).needs_fit:
        stores["fit"] = (
            f"results/features/{wildcards.model}/{config['ood']['id_train']}.h5"
        )
    return stores


def score_eval_args(wildcards, input):
    return " ".join(f"--eval {name}={input[name]}" for name in ood_eval_sets())


def score_fit_args(wildcards, input):
    return f"--fit-store {input.fit}" if "fit" in input.keys() else ""


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
    if prototype_methods() and "probe_model" not in config:
        raise ConfigError("config: prototypes need a probe_model (the transfer check of evaluate_prototypes)")
    if ood["id_train"] == ood["id_test"]:
        raise ConfigError(
            "config: ood.id_train and ood.id_test must differ (the KNN bank must not hold test images)"
        )
    for method in ood["methods"]:
        try:
            detector_class(method)
        except ValueError as err:
            raise ConfigError(f"config: ood.methods: {err}") from None


check_config()


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),
    generated="|".join(generated_sets()) or "^$",
    method="|".join(config["ood"]["methods"]),
    proto="|".join(PROTOTYPE_COMMANDS),

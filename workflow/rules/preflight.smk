# Checks before any job is submitted (before GPU time is spent): the data set folders and checkpoints that the config
# names exist and load, layer names exist in their architecture, class indices are in range. Generated data sets and
# trained models do not exist yet: only their architecture is checked. Runs once, in the main Snakemake process (not
# in every cluster job); all problems are reported together, each naming its config key.
from peekflow import preflight as _preflight
from peekflow.models.spec import (
    ModelSpec as _ModelSpec,
    resolve_classes as _spec_classes,
)
from peekflow.prototypes.batching import resolve_classes as _class_indices


def _model_problems(name, m):
    key = f"models.{name}"
    try:
        model = _preflight.abstract_model(
            m["arch"], m["num_classes"], m.get("arch_kwargs")
        )
    except (ValueError, TypeError) as err:
        return [f"{key}.arch: {err}"]
    problems = []
    try:
        _preflight.check_layers(model, [*m["layers"], m["penultimate"]])
    except ValueError as err:
        problems.append(f"{key}.layers: {err}")
    if "checkpoint" in m:
        try:
            meta = _preflight.check_checkpoint(
                m["checkpoint"], m["arch"], m["num_classes"], m.get("arch_kwargs")
            )
        except (ValueError, FileNotFoundError) as err:
            return [*problems, f"{key}.checkpoint: {err}"]
        fields = ["classes", "classes_file", "classes_from_folder"]
        spec = _ModelSpec(
            name, m["arch"], m["num_classes"], **{k: m[k] for k in fields if k in m}
        )
        try:
            _spec_classes(spec, meta)
        except (ValueError, FileNotFoundError) as err:
            problems.append(f"{key} (class names): {err}")
    return problems


def _prototype_problems():
    if config["target_model"] not in config["models"]:
        return []  # check_config names it
    num_classes = config["models"][config["target_model"]]["num_classes"]
    problems = []
    for method, settings in config.get("prototypes", {}).get("methods", {}).items():
        settings = settings or {}
        key = f"prototypes.methods.{method}"
        try:
            _class_indices(settings.get("classes", "all"), num_classes)
        except ValueError as err:
            problems.append(f"{key}.classes: {err}")
        target = settings.get("target")
        if target is not None and not (
            isinstance(target, int) and 0 <= target < num_classes
        ):
            problems.append(
                f"{key}.target: {target!r} is not a class index of {config['target_model']!r} "
                f"({num_classes} classes)"
            )
    return problems


def preflight():
    problems = []
    for name, spec in config["datasets"].items():
        if "path" in spec:
            try:
                _preflight.check_image_folder(spec["path"])
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"datasets.{name}.path: {err}")
    for name, m in config["models"].items():
        problems += _model_problems(name, m)
    problems += _prototype_problems()
    if problems:
        raise ConfigError(
            "config: wrong inputs (checked before any job is submitted):\n"
            + "\n".join(f"  {p}" for p in problems)
        )


if workflow.is_main_process:
    preflight()

"""Checks of a whole workflow config (the dict Snakemake reads), before any job runs.

Two kinds of check, each reporting every problem at once, each problem naming its full config path:
- `config_problems`: each stage's settings block against its settings class (peekflow.workflow.config_schema) and
  the rest against the JSON schema (config_schema.workflow_schema(), whose committed copy is
  workflow/schemas/config.schema.yaml): unknown keys (with the nearest valid name), missing keys, types, choices and
  ranges. Then `fill_defaults` fills in the schema's defaults.
- `reference_problems`: what the schema cannot express: every name a key mentions (data set, model, layer, OOD
  method, prototype method: their registries) exists, splits exist, the KNN bank never holds the ID test set. Run on
  the validated config (defaults filled in).
The checks that need files or built models are peekflow.workflow.preflight's. `all_problems` runs all three kinds in
one round (the Snakefile's check), and `check` raises ConfigError with all of them.
"""

from __future__ import annotations

import difflib
import itertools
import os
from pathlib import Path

import jsonschema
import yaml

from peekflow.ood.base import available, build as build_detector, detector_class
from peekflow.prototypes.methods import methods as prototype_methods


class ConfigError(ValueError):
    pass


def check(problems: list[str], what: str = "config") -> None:
    if problems:
        raise ConfigError(f"{what}: {len(problems)} problem(s), nothing was run:\n"
                          + "\n".join(f"  {p}" for p in problems))


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _schema_message(error: jsonschema.ValidationError) -> list[str]:
    where = _path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        out = []
        for key in sorted(set(error.instance) - set(allowed)):
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {near[0]}?" if near else f"valid keys: {allowed}"
            out.append(f"{where + '.' if error.absolute_path else ''}{key}: unknown key ({hint})")
        if out:
            return out
    if error.validator in ("oneOf", "anyOf") and error.context:  # the alternative closest to matching
        best = jsonschema.exceptions.best_match(error.context)
        return [f"{where}: {best.message}"]
    return [f"{where}: {error.message}"]


def schema_problems(config: dict, schema: dict | str | os.PathLike) -> list[str]:
    """Every violation of `schema` (a dict, or the path of a YAML file) by `config`, as '<config path>: <reason>'."""
    if not isinstance(schema, dict):
        schema = yaml.safe_load(Path(schema).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        problems += _schema_message(error)
    return problems


def config_problems(config: dict, schema: dict | str | os.PathLike) -> list[str]:
    """Every problem of the settings blocks (peekflow.workflow.config_schema: each stage's settings class) and of the
    rest of the config (the schema), each config path reported once."""
    from peekflow.workflow.config_schema import settings_problems

    found = settings_problems(config)
    seen = {p.split(": ", 1)[0] for p in found}
    return found + [p for p in schema_problems(config, schema) if p.split(": ", 1)[0] not in seen]


def fill_defaults(config: dict, schema: dict, strict: bool = True) -> None:
    """Fill in the schema's defaults, in place, as Snakemake's `validate` does: every `default` of a property that
    the config leaves out, at every level the config has (a default mapping gets the defaults inside it). `strict`:
    fail on the first schema violation; otherwise fill in what can be filled around them."""
    checker = jsonschema.validators.validator_for(schema)
    properties = checker.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, node):
        for key, sub in props.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(key, sub["default"])
        yield from properties(validator, props, instance, node)

    validator = jsonschema.validators.extend(checker, {"properties": set_defaults})(schema)
    if strict:
        validator.validate(config)
    else:
        for _ in validator.iter_errors(config):
            pass


def all_problems(config: dict, schema: dict, inputs: bool = True) -> list[str]:
    """Every problem of a workflow config in one round, each naming its config path: the schema's
    (`config_problems`), names that point nowhere (`reference_problems`) and, with `inputs` (once, in the workflow's
    main process), the folders, checkpoints and model shapes (peekflow.workflow.preflight.input_problems); the
    later ones on a copy with the defaults filled in and the replicas expanded. After problems of an earlier kind a
    later check runs as far as the config allows: one that cannot read the config is skipped, and what it finds in a
    block the schema already faulted (the same model, data set or stage) is left for the round after the fix, as a
    likely consequence."""
    import copy

    from peekflow.workflow import preflight, replicas

    found = config_problems(config, schema)
    faulted = {_block(p) for p in found}
    trial = copy.deepcopy(config)
    fill_defaults(trial, schema, strict=not found)
    later = preflight.as_far_as_possible(lambda: reference_problems(trial), bool(found))
    if inputs:
        lenient = bool(found or later)
        if preflight.as_far_as_possible(lambda: [replicas.expand(trial)], lenient):
            later += preflight.input_problems(trial, lenient)
    return list(dict.fromkeys(found + [p for p in later if _block(p) not in faulted]))


def _block(problem: str) -> str:
    """The block a problem is in: the first two parts of its config path (models.mine, datasets.x, ood.methods)."""
    return ".".join(problem.split(":")[0].split(" ")[0].split(".")[:2])


def swept_settings(method: str, settings: dict) -> list[str]:
    """The settings of `method` given as lists that it sweeps (its detector's `sweeps`; for a method the registry
    does not know, reported elsewhere: every list)."""
    try:
        sweeps = detector_class(method).sweeps
    except ValueError:
        sweeps = tuple(settings)
    return [key for key in sweeps if isinstance(settings.get(key), list)]


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def ood_runs(config: dict) -> dict[str, tuple[str, dict]]:
    """The OOD table's score files: run name -> (method, settings). A list under a setting the method sweeps (its
    detector's `sweeps`: k of knn*, percentile of react, ...) gives one run per value, named <method>_<key><value>
    (knn_k1, react_percentile85; several swept settings: every combination); otherwise the run is named after its
    method."""
    runs = {}
    for method, settings in config["ood"]["methods"].items():
        settings = dict(settings or {})
        swept = swept_settings(method, settings)
        for values in itertools.product(*(settings[key] for key in swept)):
            name = method + "".join(f"_{key}{_label(value)}" for key, value in zip(swept, values))
            runs[name] = (method, {**settings, **dict(zip(swept, values))})
    return runs


def ood_fit_dataset(config: dict, method: str) -> str | None:
    """The data set whose feature store OOD method `method` fits on: the ID training set, or prototypes_<bank> for a
    method on a data-free bank; None for a method that fits on nothing."""
    cls = detector_class(method)
    if not cls.needs_fit:
        return None
    return f"prototypes_{cls.prototype_bank}" if cls.prototype_bank else config["ood"]["id_train"]


def run_method(run: str) -> str:
    """The OOD method of run `run` without the config (ood_runs' names read back): the longest registered method name
    that is `run` itself or followed by `_` (a swept setting)."""
    names = [name for name in available() if run == name or run.startswith(name + "_")]
    if not names:
        raise ValueError(f"{run!r} names no registered OOD method; valid methods: {available()}")
    return max(names, key=len)


class _References:
    """Collects the problems of names that point nowhere."""

    def __init__(self, config: dict):
        self.config = config
        self.problems: list[str] = []

    def need(self, section: str, name, where: str) -> bool:
        defined = self.config.get(section) or {}
        if name in defined:
            return True
        self.problems.append(f"{where}: names {name!r}, which is not defined in {section}; defined: {sorted(defined)}")
        return False

    def add(self, problem: str) -> None:
        self.problems.append(problem)


def reference_problems(config: dict) -> list[str]:
    r = _References(config)
    _data_and_models(config, r)
    _ood(config, r)
    _prototypes_and_probing(config, r)
    _target_stages(config, r)
    return r.problems


def _data_and_models(config: dict, r: _References) -> None:
    sets = config.get("generate", {}).get("sets", {})
    for name, spec in config["datasets"].items():
        if "generated" in spec:
            gen = sets.get(spec["generated"])
            if gen is None:
                r.add(f"datasets.{name}.generated: names {spec['generated']!r}, which is not defined in "
                      f"generate.sets; defined: {sorted(sets)}")
            elif spec["split"] not in gen["splits"]:
                r.add(f"datasets.{name}.split: {spec['split']!r} is not a split of generate.sets.{spec['generated']} "
                      f"(splits: {sorted(gen['splits'])})")
    for name, spec in sets.items():
        if spec["kind"] == "shapes" and "classes" not in spec:
            r.add(f"generate.sets.{name}: is of kind shapes and needs `classes`")
    for name, m in config["models"].items():
        if m["penultimate"] not in m["layers"]:
            r.add(f"models.{name}.penultimate: {m['penultimate']!r} must be one of its layers {m['layers']}")
        if "train" in m:
            for key in ("dataset", "val_dataset"):
                r.need("datasets", m["train"][key], f"models.{name}.train.{key}")
    for name in config.get("extract", {}).get("shards", {}):
        r.need("datasets", name, "extract.shards")
    if "target_model" not in config and "target_models" not in config:
        r.add("target_models: the config names no target model: set target_model or target_models")
    if "target_model" in config and "target_models" in config:
        r.add("target_models: give target_model or target_models, not both")
    if "target_model" in config:
        r.need("models", config["target_model"], "target_model")
    for name in config.get("target_models", []):
        r.need("models", name, "target_models")
    if "probe_model" in config and r.need("models", config["probe_model"], "probe_model"):
        probe = config["models"][config["probe_model"]]
        if (probe.get("train") or {}).get("seeds") or isinstance(probe.get("checkpoint"), list):
            r.add(f"probe_model: {config['probe_model']!r} has several replicas (train.seeds or a list of "
                  "checkpoints); the probe must be one model")


def _ood(config: dict, r: _References) -> None:
    ood = config["ood"]
    for key in ("id_train", "id_test"):
        r.need("datasets", ood[key], f"ood.{key}")
    for name in ood["ood_sets"]:
        r.need("datasets", name, "ood.ood_sets")
    if ood["id_train"] == ood["id_test"]:
        r.add("ood.id_test: must differ from ood.id_train (the KNN bank must not hold test images)")
    for method, settings in ood["methods"].items():
        for key in swept_settings(method, settings or {}):
            if settings[key] == []:
                r.add(f"ood.methods.{method}.{key}: is an empty list")
    for group, names in (ood.get("groups") or {}).items():
        for name in names:
            if name not in ood["ood_sets"]:
                r.add(f"ood.groups.{group}: names {name!r}, which is not one of ood.ood_sets {ood['ood_sets']}")
    prototypes = config.get("prototypes", {}).get("methods", {})
    for method, settings in ood_runs(config).values():
        try:
            build_detector(method, settings)  # unknown methods, settings or values fail here
        except ValueError as err:
            r.add(f"ood.methods.{method}: {err}")
            continue
        bank = detector_class(method).prototype_bank
        if bank and bank not in prototypes:
            r.add(f"ood.methods.{method}: fits on {bank} prototypes: configure prototypes.methods.{bank}")


def _prototypes_and_probing(config: dict, r: _References) -> None:
    methods, registered = config.get("prototypes", {}).get("methods", {}), prototype_methods()
    for method in methods:
        if method not in registered:
            r.add(f"prototypes.methods.{method}: unknown prototype method; valid: {sorted(registered)}")
    for method in methods:
        if method in registered and registered[method].references:
            r.need("datasets", reference_dataset(config, method), f"prototypes.methods.{method}.dataset")
    if methods and "probe_model" not in config:
        r.add("probe_model: prototypes need a probe_model (the transfer check of evaluate_prototypes)")
    if "probing" in config:
        probing = config["probing"]
        if probing["prototypes"] not in methods:
            r.add(f"probing.prototypes: {probing['prototypes']!r} is not one of prototypes.methods {sorted(methods)}")
        r.need("datasets", probing["known"], "probing.known")
        if "probe_model" not in config:
            r.add("probe_model: probing needs a probe_model (the network that embeds the prototypes)")


def reference_dataset(config: dict, method: str) -> str:
    """The data set prototype method `method` (caricatures) draws its reference images from (default: the ID test
    set)."""
    block = config["prototypes"]["methods"].get(method) or {}
    return block.get("dataset", config["ood"]["id_test"])


def _target_stages(config: dict, r: _References) -> None:
    """labels, neurons and emergence read layers of each target from its feature stores."""
    from peekflow.workflow.replicas import target_names

    targets = [t for t in (target_names(config) if "target_models" in config or "target_model" in config else [])
               if t in config["models"]]  # the others are named by _data_and_models

    def stored_layers(layers_of, where):
        for target in targets:
            stored = config["models"][target]["layers"]
            missing = [layer for layer in layers_of(target) if layer not in stored]
            if missing:
                r.add(f"{where}: {missing} are not in models.{target}.layers {stored} "
                      "(the stage reads them from the feature store)")

    labels = config.get("labels")
    if labels:
        stored_layers(lambda _: labels["layers"], "labels.layers")
        if "invert" in labels:
            block = labels["invert"]
            if r.need("datasets", block["dataset"], "labels.invert.dataset") and \
                    "path" in config["datasets"][block["dataset"]] and "attributes" not in block:
                r.add(f"labels.invert.attributes: labels.invert.dataset {block['dataset']!r} is a folder of your "
                      "own: name its attributes.csv here")
    if "neurons" in config:
        r.need("datasets", neuron_dataset(config), "neurons.dataset")
        stored_layers(lambda target: neuron_layers(config, target), "neurons.layers")
    if "emergence" in config:
        r.need("datasets", config["emergence"]["dataset"], "emergence.dataset")
        layers = config["emergence"]["layers"]
        if len(set(layers)) != len(layers):
            r.add(f"emergence.layers: repeat a layer: {layers}")


def neuron_layers(config: dict, model: str) -> list[str]:
    """Layers of a target whose channels get top-N images and patches (default: its configured layers)."""
    return config["neurons"].get("layers") or config["models"][model]["layers"]


def ranks_by_relevance(config: dict) -> bool:
    """Whether the top-N images are ranked by relevance, running the model (neurons.ranking), not by activation."""
    return config.get("neurons", {}).get("ranking", {}).get("rank_by") == "relevance"


def neuron_dataset(config: dict) -> str:
    """The data set whose feature store ranks the images (default: the ID training set)."""
    return config["neurons"].get("dataset") or config["ood"]["id_train"]

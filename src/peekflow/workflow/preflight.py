"""Cheap checks of user-provided inputs and of settings that must fit the model, run before any job is submitted:
an image folder holds images, a checkpoint loads and fits its architecture, layer names exist, class indices exist,
the emergence grid and patch windows fit the maps and the input. `input_problems(config)` runs them all (once, in
the workflow's main process: workflow/rules/common.smk) and returns every problem with its config key; the single
checks raise ValueError / FileNotFoundError with a one-line reason."""

from __future__ import annotations

import difflib
import functools
import json
import os
from pathlib import Path

from torch import nn

from peekflow.data.folder import IMAGE_SUFFIXES
from peekflow.models.checkpoint import fitting_arch_kwargs, fitting_state, read_checkpoint
from peekflow.models.fit import fit_problem
from peekflow.models.layers import layer_channels, layer_names
from peekflow.models.registry import build_model
from peekflow.prototypes.batching import resolve_classes
from peekflow.prototypes.methods import method as prototype_method


def check_image_folder(path) -> None:
    """`path` is a directory with at least one image in the <class>/<image> layout (stops at the first image found)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a directory")
    with os.scandir(root) as entries:
        class_dirs = sorted(e.path for e in entries if e.is_dir())
    for class_dir in class_dirs:
        with os.scandir(class_dir) as entries:
            if any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in entries):
                return
    raise ValueError(f"{root} holds no images in <class>/<image> layout ({len(class_dirs)} class folders)")


def abstract_model(arch: str, num_classes: int, arch_kwargs: dict | None = None) -> nn.Module:
    """The architecture, randomly initialised on the CPU (names and shapes are what count; callers only read them).
    Not on the meta device: its first weight initialisation imports torch._dynamo, seconds more than building a
    ResNet-50 on the CPU. Built once per architecture: the layer check and the checkpoint check both ask for it."""
    return _built(arch, num_classes, json.dumps(arch_kwargs or {}, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _built(arch: str, num_classes: int, arch_kwargs: str) -> nn.Module:
    return build_model(arch, num_classes, **json.loads(arch_kwargs))


def check_layers(model: nn.Module, layers: list[str]) -> None:
    """Layers are module paths of the built model (`layer4`, `blocks.11`, `stages.3.blocks.2`, `features.7`); a
    wrong one is reported with the valid names nearest to it and the top-level ones."""
    names = layer_names(model)
    wrong = [layer for layer in layers if layer not in set(names)]
    if wrong:
        near = {w: difflib.get_close_matches(w, names, n=6, cutoff=0.6) for w in wrong}
        shown = "; ".join(f"{w!r}: nearest valid {near[w]}" for w in wrong if near[w])
        top = [n for n in names if "." not in n]
        nested = next((f", nested ones by module path, e.g. {n!r}" for n in names if "." in n), "")
        raise ValueError(f"layer(s) {wrong} not in {type(model).__name__}" + (f"; {shown}" if shown else "") +
                         f"; top-level layers: {top}{nested}")


def check_checkpoint(path, arch: str, num_classes: int, arch_kwargs: dict | None = None,
                     key: str = "models.<name>") -> dict:
    """The checkpoint loads (CPU, weights only) and its tensors fit `arch` by name and shape; returns its metadata.
    A misfit names the difference in structure and the key under `key` (the model's config path) that changes it."""
    ckpt = read_checkpoint(path)
    arch_kwargs = fitting_arch_kwargs(ckpt, path, arch, num_classes, arch_kwargs)
    model = abstract_model(arch, num_classes, arch_kwargs)
    found = {k: tuple(v.shape) for k, v in fitting_state(ckpt, arch, model).items()}
    problem = fit_problem(found, model, num_classes, key)
    if problem:
        raise ValueError(f"{path} does not fit {arch} with {num_classes} classes: {problem}")
    return {k: v for k, v in ckpt.items() if k != "state_dict"}


def input_size(config: dict, dataset: str, model: dict) -> int | None:
    """The side of the images `model` sees from `dataset`: its crop, else its resize, else the generated size; None
    for a folder of the user's own without resize or crop (sizes vary: nothing to check up front)."""
    prep = model.get("preprocessing") or default_preprocessing(model)
    if prep.get("crop") or prep.get("resize"):
        return int(prep.get("crop") or prep["resize"])
    if "generated" in config["datasets"].get(dataset, {}):
        return int(config["generate"]["image_size"])
    return None


def default_preprocessing(m: dict) -> dict:
    """A timm model's preprocessing when its config gives none (from timm's data config)."""
    from peekflow.models.timm_models import is_timm, timm_preprocessing

    if not is_timm(m["arch"]):
        return {}
    return timm_preprocessing(abstract_model(m["arch"], m["num_classes"], m.get("arch_kwargs")))


def input_notes(config: dict) -> list[str]:
    """What the user should know of how the models see their images before any job: the crop of a timm model's
    default preprocessing (its data config) where the config gives none. Each extraction's log and store records
    it too, and the OOD table repeats it."""
    from peekflow.models.timm_models import crop_note, is_timm
    from peekflow.workflow.replicas import base

    notes = []
    for name, m in config["models"].items():
        if is_timm(m["arch"]) and not m.get("preprocessing"):
            note = crop_note(default_preprocessing(m), f"models.{base(name)}")
            if note and note not in notes:
                notes.append(note)
    return notes


def map_sizes(model: nn.Module, layers: list[str], size: int) -> dict[str, tuple[int, ...]]:
    """Spatial shape of each layer's output for a `size` x `size` input (one forward pass on zeros); () for a layer
    without a map (a vector, or tokens that are not prefix tokens + a patch grid: models/tokens.py)."""
    import torch

    from peekflow.models.layers import record_layers

    with torch.no_grad(), record_layers(model.eval(), layers) as acts:
        model(torch.zeros(1, 3, size, size))
    return {name: tuple(acts[name].shape[2:]) if acts[name].ndim == 4 else () for name in layers}


def model_problems(name: str, m: dict) -> list[str]:
    """The architecture builds, its layers exist, a given checkpoint loads, fits and names its classes."""
    from peekflow.models.spec import ModelSpec, resolve_classes
    from peekflow.workflow.replicas import base

    key = f"models.{name}"
    try:
        model = abstract_model(m["arch"], m["num_classes"], m.get("arch_kwargs"))
    except (ValueError, TypeError) as err:
        return [f"{key}.arch: {err}"]
    problems = []
    try:
        check_layers(model, [*m["layers"], m["penultimate"]])
    except ValueError as err:
        problems.append(f"{key}.layers: {err}")
    if "checkpoint" in m:
        try:
            meta = check_checkpoint(m["checkpoint"], m["arch"], m["num_classes"], m.get("arch_kwargs"),
                                    f"models.{base(name)}")
        except (ValueError, FileNotFoundError) as err:
            return [*problems, f"{key}.checkpoint: {err}"]
        fields = ["classes", "classes_file", "classes_from_folder"]
        spec = ModelSpec(name, m["arch"], m["num_classes"], **{k: m[k] for k in fields if k in m})
        try:
            resolve_classes(spec, meta)
        except (ValueError, FileNotFoundError) as err:
            problems.append(f"{key} (class names): {err}")
    return problems


def has_batch_norm(m: dict) -> bool:
    from peekflow.synthesis.bn_stats import batch_norms

    return bool(batch_norms(abstract_model(m["arch"], m["num_classes"], m.get("arch_kwargs"))))


def prototype_problems(config: dict, target: str) -> list[str]:
    """Class indices of the prototype methods exist in the target; a method that matches batch-norm statistics
    (DeepInversion) has batch norms to match; the methods' shards fit their batches."""

    num_classes = config["models"][target]["num_classes"]
    problems = []
    for name, block in config.get("prototypes", {}).get("methods", {}).items():
        method, key, model = prototype_method(name), f"prototypes.methods.{name}", config["models"][target]
        s = method.parse(block)
        if method.batch_norm and getattr(s, method.batch_norm) and not has_batch_norm(model):
            problems.append(f"{key}: {method.title} matches batch-norm statistics, but models.{target} "
                            f"({model['arch']}) has no BatchNorm2d layer (a vision transformer has none): use "
                            f"deepdream, or set {method.batch_norm}: 0")
        try:
            resolve_classes(getattr(s, "classes", "all"), num_classes)  # a method without `classes`: all of them
        except ValueError as err:
            problems.append(f"{key}.classes: {err}")
        index = getattr(s, "target", None)
        if index is not None and not (isinstance(index, int) and 0 <= index < num_classes):
            problems.append(f"{key}.target: {index!r} is not a class index of {target!r} ({num_classes} classes)")
    return problems or shard_problems(config, num_classes)


def shard_problems(config: dict, num_classes: int) -> list[str]:
    """prototypes.shards: a method that is made, in at most as many shards as it has batches."""
    methods = config.get("prototypes", {}).get("methods", {})
    problems = []
    for method, count in config.get("prototypes", {}).get("shards", {}).items():
        if method not in methods:
            problems.append(f"prototypes.shards.{method}: there is no prototypes.methods.{method} to shard")
            continue
        s, targets = prototype_targets(method, methods[method], num_classes)
        n = len(targets)
        batches = -(-n // s.batch_size)
        if count > batches:
            problems.append(f"prototypes.shards.{method}: {count} shards, but its {n} prototypes make {batches} "
                            f"batch(es) of {s.batch_size}: choose at most {batches}")
    return problems


def prototype_targets(name: str, block: dict | None, num_classes: int):
    """(settings object, the class of every prototype) of prototype method `name` (its config block)."""
    method = prototype_method(name)
    s = method.parse(block)
    return s, method.target_classes(s, num_classes)


def ood_fit_size_problems(config: dict, target: str) -> list[str]:
    """OOD methods whose scores a fit store of the size the config gives would leave undetermined (each detector's
    `fit_size_problem`: ViM / Residual inside their principal space, a tied covariance of one row per class, fewer
    rows than k): refused before any job, naming method, bank, rows and dimension. Sizes the config gives: the
    prototype banks (their targets) and a generated ID training set (its count per class); the fit job itself
    checks any other store the same way."""
    from collections import Counter

    from peekflow.workflow.config_checks import ood_runs
    from peekflow.ood.base import Detector, build

    model, ood, problems = config["models"][target], config["ood"], []
    dims = None
    for run, (method, settings) in ood_runs(config).items():
        try:
            detector = build(method, settings)
        except ValueError:
            continue  # named by the reference checks
        if not detector.needs_fit or type(detector).fit_size_problem is Detector.fit_size_problem:
            continue
        bank = detector.prototype_bank
        if bank:
            block = config.get("prototypes", {}).get("methods", {})
            if bank not in block:
                continue  # named by the reference checks
            class_rows = Counter(prototype_targets(bank, block[bank], model["num_classes"])[1])
            rows = sum(class_rows.values())
            where = f"the {bank} prototypes (prototypes.methods.{bank}: per_class x classes rows)"
        elif "generated" in config["datasets"][ood["id_train"]]:  # a folder of one's own is not listed for this
            rows, class_rows = dataset_size(config, ood["id_train"]), generated_class_rows(config, ood["id_train"])
            where = f"ood.id_train {ood['id_train']!r}"
        else:
            continue
        size = input_size(config, ood["id_test"], model)
        if rows is None or not size:
            continue  # sizes not known before the job (its fit checks the same)
        if dims is None:
            built = abstract_model(model["arch"], model["num_classes"], model.get("arch_kwargs"))
            dims = layer_channels(built.eval(), model["penultimate"], size)
        problem = detector.fit_size_problem(rows, class_rows, dims)
        if problem:
            key = f"ood.methods.{method}" + (f" (run {run})" if run != method else "")
            problems.append(f"{key}: its fit store, {where} of {target}'s {model['penultimate']} features, has "
                            f"{problem}")
    return problems


def generated_class_rows(config: dict, name: str) -> dict | None:
    """Images per class of a generated shapes split (label -> count); None for other data sets."""
    spec = config["datasets"][name]
    block = config.get("generate", {}).get("sets", {}).get(spec.get("generated"), {})
    count = block.get("splits", {}).get(spec.get("split"))
    if block.get("kind") != "shapes" or not isinstance(count, int):
        return None
    return dict.fromkeys(range(len(block.get("classes") or [])), count)


def dataset_size(config: dict, name: str) -> int | None:
    """Images of data set `name`: a generated split's planned count (per class x classes for shapes, else the
    total), or the images of a folder of the user's own; None where it cannot be known yet (a folder not there)."""
    spec = config["datasets"][name]
    if "generated" in spec:
        block = config.get("generate", {}).get("sets", {}).get(spec["generated"], {})
        count = block.get("splits", {}).get(spec.get("split"))
        if not isinstance(count, int):
            return None  # named by the reference checks
        return count * len(block.get("classes") or []) if block.get("kind") == "shapes" else count
    from peekflow.data.folder import list_images

    try:
        return len(list_images(spec["path"]))
    except (FileNotFoundError, ValueError):
        return None  # named by the image-folder check


def extract_shard_problems(config: dict) -> list[str]:
    """extract.shards: each sharded data set in at most as many shards as its images make extraction batches."""
    block = config.get("extract", {})
    problems = []
    for name, count in block.get("shards", {}).items():
        if count == 1 or name not in config["datasets"]:
            continue
        n = dataset_size(config, name)
        batch_size = block["batch_size"]
        batches = -(-n // batch_size) if n else None
        if batches is not None and count > batches:
            problems.append(f"extract.shards.{name}: {count} shards, but its {n} images make {batches} batch(es) "
                            f"of {batch_size} (extract.batch_size): choose at most {batches}")
    return problems


def dora_shard_problems(config: dict, name: str) -> list[str]:
    """labels.shards.dora: DORA is run, in at most as many shards as the s-AMS of each labelled layer of target
    `name` make render batches (which hold whole neurons when there are several)."""
    from peekflow.neurons.dora import DoraSettings, check_dora_batches, resolve_neurons

    labels = config.get("labels", {})
    count = labels.get("shards", {}).get("dora", 1)
    if count == 1:
        return []
    if "dora" not in labels:
        return ["labels.shards.dora: there is no labels.dora to shard"]
    target, s = config["models"][name], DoraSettings(**labels["dora"])
    prep = target.get("preprocessing") or default_preprocessing(target)
    size = s.size or prep.get("crop") or prep.get("resize")  # as DORA's resolve_size
    if not size:
        return []  # the job's own check names the missing size
    model = abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs"))
    problems = []
    for layer in labels.get("layers", []):
        if layer not in set(layer_names(model)):
            continue  # named by the layer checks
        try:
            neurons = resolve_neurons(s.neurons, layer_channels(model, layer, int(size)), layer)
            batches = check_dora_batches(s, len(neurons))
        except (KeyError, ValueError) as err:
            problems.append(f"labels.dora: {err}")
            continue
        if count > batches:
            problems.append(f"labels.shards.dora: {count} shards, but the {len(neurons)} neurons of {name}'s "
                            f"{layer} make {batches} batch(es) of {s.batch_size} s-AMS ({s.per_neuron} per neuron): "
                            f"choose at most {batches}")
    return list(dict.fromkeys(problems))


def patch_shard_problems(config: dict, name: str) -> list[str]:
    """neurons.shards.patches: patches are searched, in at most as many shards as the selected channels of each
    neuron layer of target `name` make channel batches (neurons.patches.channel_batch)."""
    from peekflow.workflow.config_checks import neuron_dataset, neuron_layers
    from peekflow.neurons.patches import PatchSettings, select_channels

    neurons = config.get("neurons", {})
    count = neurons.get("shards", {}).get("patches", 1)
    if count == 1:
        return []
    if "patches" not in neurons:
        return ["neurons.shards.patches: there is no neurons.patches to shard"]
    target, s = config["models"][name], PatchSettings(**neurons["patches"])
    size = input_size(config, neuron_dataset(config), target)
    if not size:
        return []  # the job counts the batches itself
    model = abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs"))
    problems = []
    for layer in neuron_layers(config, name):
        if layer not in set(layer_names(model)):
            continue  # named by the layer checks
        try:
            channels = len(select_channels(s.channels, layer_channels(model, layer, size), layer))
        except ValueError as err:
            problems.append(f"neurons.patches.channels: {err}")
            continue
        batches = -(-channels // s.channel_batch)
        if count > batches:
            problems.append(f"neurons.shards.patches: {count} shards, but the {channels} selected channels of "
                            f"{name}'s {layer} make {batches} batch(es) of {s.channel_batch} "
                            f"(neurons.patches.channel_batch): choose at most {batches}")
    return list(dict.fromkeys(problems))


def ranking_problems(config: dict, name: str) -> list[str]:
    """neurons.ranking: a relevance rule that can explain the target."""
    ranking = config.get("neurons", {}).get("ranking", {})
    if ranking.get("rank_by") != "relevance":
        return []
    from peekflow.neurons.topn import RankSettings
    from peekflow.synthesis.relevance import check_method

    target = config["models"][name]
    try:
        check_method(abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs")),
                     RankSettings(**ranking).relevance)
    except ValueError as err:
        return [f"neurons.ranking.relevance: {err}"]
    return []


def vital_problems(config: dict, name: str) -> list[str]:
    """neurons.vital: each VITAL layer is a neuron layer (its patches are the references), its channels exist and
    are among the patch search's channels, and some match layer comes before it."""
    from peekflow.workflow.config_checks import neuron_dataset, neuron_layers
    from peekflow.neurons.patches import PatchSettings, select_channels
    from peekflow.neurons.vital import VitalSettings, match_layers_for
    from peekflow.synthesis.relevance import check_method

    block = config.get("neurons", {}).get("vital")
    if not block:
        return []
    s = VitalSettings(**{k: v for k, v in block.items() if k != "layers"})
    target, layers = config["models"][name], neuron_layers(config, name)
    problems = [f"neurons.vital.layers: {layer!r} is not a neuron layer of {name} ({layers}): its patches are "
                "VITAL's references" for layer in block["layers"] if layer not in layers]
    size = input_size(config, neuron_dataset(config), target)
    model = abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs"))
    patches = PatchSettings(**config["neurons"].get("patches", {}))
    try:
        check_method(model, s.relevance)
    except ValueError as err:
        problems.append(f"neurons.vital.relevance: {err}")
    for layer in [layer for layer in block["layers"] if layer in layers and layer in set(layer_names(model))]:
        try:
            match_layers_for(model, layer, s.match_layers)
        except ValueError as err:
            problems.append(f"neurons.vital.match_layers: {err}")
        if not size:
            continue  # the job checks the channels
        n = layer_channels(model, layer, size)
        try:
            searched = set(select_channels(patches.channels, n, layer).tolist())
            chosen = sorted(searched) if s.channels == "all" else \
                select_channels(s.channels, n, layer, "neurons.vital.channels").tolist()
        except ValueError as err:
            problems.append(str(err))
            continue
        missing = [c for c in chosen if c not in searched]
        if missing:
            problems.append(f"neurons.vital.channels: channel(s) {missing[:10]} of {name}'s {layer} get no patches "
                            f"(neurons.patches.channels: {patches.channels!r})")
    return problems


def shape_problems(config: dict, name: str) -> list[str]:
    """Settings that must fit a target: a prototype method's layer (the caricatures') exists; the emergence grid fits
    every analysed layer's map (the message gives the largest grid that fits all of them); a window of the patch
    search fits the input."""
    from peekflow.neurons.patches import PatchSettings

    target = config["models"][name]
    problems = []
    for method, block in config.get("prototypes", {}).get("methods", {}).items():
        if block and "layer" in block:
            try:
                check_layers(abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs")),
                             [block["layer"]])
            except ValueError as err:
                problems.append(f"prototypes.methods.{method}.layer: {err}")
    if "emergence" in config:
        block = config["emergence"]
        size = input_size(config, block["dataset"], target)
        if size:
            model = abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs"))
            maps = map_sizes(model, block["layers"], size)
            largest = min(min(shape) if shape else 0 for shape in maps.values())
            if block["grid"] > largest:
                shown = ", ".join(f"{layer} {'x'.join(map(str, s)) or 'no map'}" for layer, s in maps.items())
                problems.append(f"emergence.grid: {block['grid']} does not fit the maps of the analysed layers "
                                f"at {size} px ({shown}): choose 1 <= grid <= {largest}" if largest else
                                f"emergence.layers: every analysed layer needs a spatial map ({shown})")
    if "patches" in config.get("neurons", {}):
        from peekflow.workflow.config_checks import neuron_dataset, neuron_layers

        size = input_size(config, neuron_dataset(config), target)
        if size:
            model = abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs"))
            flat = [layer for layer, shape in map_sizes(model, neuron_layers(config, name), size).items() if not shape]
            if flat:
                problems.append(f"neurons.layers: {flat} give no spatial map at {size} px (vectors, or tokens that "
                                "are not class/register tokens + a square grid of patch tokens): patches need one")
    patches = PatchSettings(**config.get("neurons", {}).get("patches", {}))
    window = patches.window_size
    if patches.mode == "window" and isinstance(window, int):
        from peekflow.workflow.config_checks import neuron_dataset

        size = input_size(config, neuron_dataset(config), target)
        if size and window > size:
            problems.append(f"neurons.patches.window_size: {window} px exceeds the {size} px model input: "
                            f"choose 1 <= window_size <= {size} (or rf)")
    return problems


def class_names(config: dict, name: str) -> tuple[list[str] | None, str]:
    """(the class names of model `name` as the checks before any job can know them, the config key they come from):
    their set, not yet the unit order of a model still to be trained. A checkpoint's or the config's (classes,
    classes_file, classes_from_folder), or the class folders of a trained model's data set (a generated shapes set:
    its `classes`); None where they cannot be known before the jobs (a folder or checkpoint missing: the other checks
    name it)."""
    from peekflow.data.folder import class_folders
    from peekflow.models.checkpoint import read_checkpoint
    from peekflow.models.spec import ModelSpec, resolve_classes

    m, key = config["models"][name], f"models.{name}"
    try:
        if "train" in m:
            data = m["train"]["dataset"]
            spec = config["datasets"][data]
            if "path" in spec:
                return class_folders(spec["path"]), f"datasets.{data}.path"
            return (list(config["generate"]["sets"][spec["generated"]].get("classes") or []) or None,
                    f"generate.sets.{spec['generated']}.classes")
        fields = [k for k in ("classes", "classes_file", "classes_from_folder") if k in m]
        meta = {k: v for k, v in read_checkpoint(m["checkpoint"]).items() if k != "state_dict"}
        source = f"{key}.checkpoint" if meta.get("classes") else f"{key}.{fields[0]}" if fields else key
        return resolve_classes(ModelSpec(name, m["arch"], m["num_classes"], **{k: m[k] for k in fields}), meta), source
    except (KeyError, ValueError, FileNotFoundError):
        return None, key


def semantics_problems(config: dict) -> list[str]:
    """semantics: WordNet 3.0 is installed (else how to install it), and every class of every target and of the probe
    has a noun synset -- its name a wnid that is a WordNet 3.0 noun offset, or an entry of semantics.synsets that
    names one -- and every entry of semantics.synsets is a class of one of them; every problem with its config key."""
    from peekflow.semantics.wordnet import SYNSETS_KEY, WORDNET_KEY, WordNetMissing, class_synset_problems, \
        open_for_checks
    from peekflow.semantics.settings import SemanticsSettings
    from peekflow.settings import parse_settings
    from peekflow.workflow.replicas import base
    from peekflow.workflow.targets import semantic_models

    block = config.get("semantics")
    if block is None:
        return []
    try:
        wordnet = open_for_checks(block.get("wordnet"), WORDNET_KEY)
    except WordNetMissing as err:
        return [str(err)]
    mapping, problems, seen, known = block.get("synsets") or {}, [], set(), set()
    for name in semantic_models(config):
        classes, source = class_names(config, name)
        if classes is None or base(name) in seen:
            continue  # unknown until a job runs (the job checks them), or a replica of a model checked already
        seen.add(base(name))
        known.update(classes)
        problems += class_synset_problems(wordnet, classes, {k: v for k, v in mapping.items() if k in classes},
                                          SYNSETS_KEY, source)[1]
    if seen:
        problems += [f"{SYNSETS_KEY}.{key}: no class {key!r} among the classes of {sorted(seen)}"
                     for key in mapping if key not in known]
    labelled = "dora" in (config.get("labels") or {})
    layer = parse_settings(SemanticsSettings, block, "semantics").output_layer if labelled else None
    for name in config["target_models"] if layer else []:
        m = config["models"][name]
        try:
            model = abstract_model(m["arch"], m["num_classes"], m.get("arch_kwargs"))
            check_layers(model, [layer])
            size = input_size(config, config["ood"]["id_test"], m) or 224
            units = layer_channels(model.eval(), layer, size)
        except (ValueError, TypeError, RuntimeError) as err:
            problems.append(f"semantics.output_layer: {err}")
            break
        if units != m["num_classes"]:
            problems.append(f"semantics.output_layer: {layer!r} of {base(name)} has {units} units, not one per class "
                            f"({m['num_classes']}): name the layer whose outputs are the logits")
            break
    return list(dict.fromkeys(problems))


def input_problems(config: dict, lenient: bool = False) -> list[str]:
    """Every check of user inputs and model shapes, all problems at once (each once), each naming its config key.
    Takes the expanded config (peekflow.workflow.replicas): replicas of one trained model share their checks.
    `lenient`: the config has problems already (schema, names; config_checks.all_problems), so a check that cannot
    read it is skipped, its problems left for the round after their fix."""
    from peekflow.workflow.replicas import SEP, base

    problems = []
    for name, spec in config["datasets"].items():
        if "path" in spec:
            try:
                check_image_folder(spec["path"])
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"datasets.{name}.path: {err}")
    broken, checked = set(), set()
    for name, m in config["models"].items():
        if "train" in m and base(name) in checked:
            continue  # another seed of a model already checked: the same architecture
        checked.add(base(name))
        found = as_far_as_possible(lambda: model_problems(name, m), lenient)
        if found:
            broken.add(name)
        problems += [p.replace(f"models.{name}", f"models.{base(name)} (replica {name})", 1) if SEP in name else p
                     for p in found]
    for target in config["target_models"]:
        problems += as_far_as_possible(lambda: prototype_problems(config, target), lenient)
        # the shape checks build the architecture and read its layers: after a problem of the model they go as far
        # as they can (a checkpoint that does not fit changes nothing for them; a layer that is not one stops them)
        faulted = target in broken or base(target) in broken
        problems += target_shape_problems(config, target, lenient or faulted)
    for check in (extract_shard_problems, last_layer_problems, model_fit_problems, semantics_problems):
        problems += as_far_as_possible(lambda: check(config), lenient)
    return list(dict.fromkeys(problems))


def as_far_as_possible(check, lenient: bool) -> list[str]:
    """`check()`; with `lenient` (the config has problems already), [] where it cannot read the config."""
    if not lenient:
        return check()
    try:
        return check()
    except Exception:  # any consequence of the problems found already: checked after their fix
        return []


def target_shape_problems(config: dict, target: str, lenient: bool = False) -> list[str]:
    """The checks that build target `target` and run it on its input size, each as far as it can (`lenient`)."""
    problems = []
    for check in (shape_problems, dora_shard_problems, patch_shard_problems, vital_problems, ranking_problems,
                  ood_fit_size_problems):
        try:
            problems += check(config, target)
        except (RuntimeError, AssertionError) as err:  # e.g. a ViT built for another img_size than the crop
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            problems.append(f"models.{target}: the model does not run on the input size of its preprocessing "
                            f"(set preprocessing.crop, or arch_kwargs such as img_size): {reason}")
        except Exception:  # with `lenient`: a consequence of the problems found already, checked after their fix
            if not lenient:
                raise
    return list(dict.fromkeys(problems))


def ood_method_classes(config: dict) -> list[tuple[str, type]]:
    """(method, detector class) of each OOD method the config runs, once each; unknown names are left to the
    reference checks."""
    from peekflow.workflow.config_checks import ood_runs
    from peekflow.ood.base import detector_class

    out = []
    for method in dict.fromkeys(m for m, _ in ood_runs(config).values()):
        try:
            out.append((method, detector_class(method)))
        except ValueError:
            continue  # named by the reference checks
    return out


def model_fit_problems(config: dict) -> list[str]:
    """OOD methods that derive their fit from the model's weights (bn_gaussian, bn_fisher) on a target whose
    architecture does not allow it (its penultimate layer is not a chain of residual blocks ending in batch norm):
    before any job, naming the OOD methods that work on that target instead."""
    from peekflow.ood.bn_gaussian import penultimate_moments

    problems = []
    for method, cls in ood_method_classes(config):
        if not cls.needs_model:
            continue
        for name in config["target_models"]:
            target = config["models"][name]
            try:
                model = abstract_model(target["arch"], target["num_classes"], target.get("arch_kwargs"))
            except (ValueError, TypeError):
                continue  # named by the model checks
            if target["penultimate"] not in set(layer_names(model)):
                continue  # named by the layer checks
            try:
                penultimate_moments(model, target["penultimate"])
            except ValueError as err:
                problems.append(f"ood.methods.{method}: {name} ({target['arch']}): {err}. OOD methods that work on "
                                f"{name}: {working_ood_methods(target)}")
    return problems


def working_ood_methods(target: dict) -> str:
    """The OOD methods that run on `target` (a model's config), grouped by what they need: nothing but the model's
    outputs, a data-free prototype bank its prototype methods can make, or the ID training set."""
    from peekflow.ood.base import available, detector_class
    from peekflow.prototypes.methods import methods as prototype_methods

    usable = {name for name, m in prototype_methods().items()
              if m.bank and (not m.batch_norm or has_batch_norm(target))}
    groups = {"no data": [], "bank": {}, "fitted": []}
    for name in available():
        cls = detector_class(name)
        if cls.needs_model:
            continue
        if cls.prototype_bank:
            if cls.prototype_bank in usable:
                groups["bank"].setdefault(cls.prototype_bank, []).append(name)
        else:
            groups["fitted" if cls.needs_fit else "no data"].append(name)
    banks = [f"data-free on {prototype_methods()[bank].title} prototypes <method>_{bank} (e.g. "
             f"{f'knn_{bank}' if f'knn_{bank}' in names else names[0]})" for bank, names in groups["bank"].items()]
    return "; ".join([f"from its outputs alone {', '.join(groups['no data'])}", *banks,
                      f"fitted on ood.id_train {', '.join(groups['fitted'])}"])


def last_layer_problems(config: dict) -> list[str]:
    """OOD methods that need the classifier's last layer (W, b) against the target's feature stores made already: a
    store without it (made before stores recorded it) fails here, before any job, naming method, store and remedy.
    Stores still to be made record it at extraction (or the scoring job fails at its start, naming the same)."""
    from peekflow.features.last_layer import LastLayer
    from peekflow.features.store import open_store
    from peekflow.workflow.config_checks import ood_fit_dataset
    from peekflow.workflow.targets import feature_store

    ood, problems = config["ood"], []
    for model, (method, cls) in ((t, mc) for t in config["target_models"] for mc in ood_method_classes(config)):
        layer = config["models"][model]["penultimate"]
        if not cls.needs_last_layer:
            continue
        fit = ood_fit_dataset(config, method)
        for dataset in [*([fit] if fit else []), ood["id_test"], *ood["ood_sets"]]:
            path = Path(feature_store(model, dataset))
            try:
                with open_store(path) as h5:
                    recorded = LastLayer.read(h5, layer) is not None
            except (OSError, ValueError):
                continue  # not made yet (or unreadable: its extraction reruns)
            if not recorded:
                problems.append(
                    f"ood.methods.{method}: feature store {path} records no last layer (W, b) for {model}'s "
                    f"penultimate layer {layer!r}, which {method} needs; re-extract it with this peekflow "
                    f"(snakemake -R extract_features, or delete the store): extraction records the nn.Linear that maps "
                    f"{layer}'s pooled features to the logits")
    return problems

"""The checks of a whole config before any job (peekflow.workflow.config_checks, peekflow.workflow.preflight's shape
checks): each fires with a message naming the config path, every problem is reported at once, and the shipped configs
pass."""

import copy

import pytest
import yaml
from peekflow.workflow import preflight
from peekflow.workflow.config_checks import (ConfigError, all_problems, check, config_problems, fill_defaults,
                                             reference_problems, schema_problems)
from peekflow.workflow.config_schema import workflow_schema
from workflow import ROOT, tiny_config

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SHIPPED = [ROOT / "config" / "config.yaml", ROOT / "config" / "imagenet_resnet50.yaml", ROOT / "tests/data/tiny_config.yaml",
           *sorted((ROOT / "config" / "examples").glob("*.yaml"))]


def validated(config: dict) -> dict:
    config = copy.deepcopy(config)
    fill_defaults(config, workflow_schema())  # as the Snakefile does
    return config


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_have_no_problems(path):
    config = yaml.safe_load(path.read_text())
    assert schema_problems(config, SCHEMA) == []
    assert reference_problems(validated(config)) == []


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["ood"].__setitem__("k_nn", 3), "ood.k_nn: unknown key (valid keys: "),
    (lambda c: c["ood"].__setitem__("ood_set", ["noise"]), "ood.ood_set: unknown key (did you mean ood_sets?)"),
    (lambda c: c["emergence"].__setitem__("gird", 2), "emergence.gird: unknown key (did you mean grid?)"),
    (lambda c: c["models"]["tiny_resnet"].pop("penultimate"), "models.tiny_resnet: 'penultimate' is a required property"),
    (lambda c: c["emergence"].__setitem__("grid", "four"), "emergence.grid: 'four' is not of type 'integer'"),
    (lambda c: c["neurons"].__setitem__("topn", 0), "neurons.topn: 0 is less than the minimum of 1"),
    (lambda c: c["datasets"].__setitem__("extra", {"split": "x"}), "datasets.extra: 'generated' is a required property"),
])
def test_schema_problem_names_its_config_path(edit, message):
    config = tiny_config()
    edit(config)
    problems = schema_problems(config, SCHEMA)
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["ood"]["methods"].__setitem__("mahalanobiss", {}),
     "ood.methods.mahalanobiss: unknown OOD method (did you mean mahalanobis?)"),
    (lambda c: c["prototypes"]["methods"]["deepdream"].__setitem__("jiter", 2),
     "prototypes.methods.deepdream.jiter: unknown key (did you mean jitter?)"),
    (lambda c: c["labels"]["dora"].__setitem__("steps", "ten"), "labels.dora.steps: expected an integer, got 'ten'"),
])
def test_settings_problems_come_first_and_once(edit, message):
    config = tiny_config()
    edit(config)
    problems = config_problems(config, SCHEMA)
    assert problems.count(message) == 1 and len(problems) == 1, problems  # the schema's own message is not repeated


def test_every_schema_problem_is_reported_at_once():
    config = tiny_config()
    config["ood"]["k_nn"] = 3
    config["emergence"]["gird"] = 2
    config["neurons"]["topn"] = 0
    with pytest.raises(ConfigError, match="3 problem") as err:
        check(schema_problems(config, SCHEMA))
    assert all(key in str(err.value) for key in ("ood.k_nn", "emergence.gird", "neurons.topn"))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["ood"].__setitem__("ood_sets", ["textures", "svhn"]),
     "ood.ood_sets: names 'svhn', which is not defined in datasets"),
    (lambda c: c.__setitem__("target_model", "resnet"), "target_model: names 'resnet', which is not defined in models"),
    (lambda c: c.__setitem__("probe_model", "vgg"), "probe_model: names 'vgg', which is not defined in models"),
    (lambda c: c["models"]["tiny_resnet"].__setitem__("penultimate", "fc"),
     "models.tiny_resnet.penultimate: 'fc' must be one of its layers"),
    (lambda c: c["models"]["tiny_vgg"]["train"].__setitem__("dataset", "mnist"),
     "models.tiny_vgg.train.dataset: names 'mnist', which is not defined in datasets"),
    (lambda c: c["datasets"]["shapes_val"].__setitem__("split", "test"),
     "datasets.shapes_val.split: 'test' is not a split of generate.sets.shapes (splits: ['train', 'val'])"),
    (lambda c: c["datasets"]["shapes_val"].__setitem__("generated", "circles"),
     "datasets.shapes_val.generated: names 'circles', which is not defined in generate.sets"),
    (lambda c: c["generate"]["sets"]["shapes"].pop("classes"), "generate.sets.shapes: is of kind shapes and needs"),
    (lambda c: c["extract"].__setitem__("shards", {"cifar": 2}), "extract.shards: names 'cifar'"),
    (lambda c: c["ood"].__setitem__("id_test", "shapes_train"), "ood.id_test: must differ from ood.id_train"),
    (lambda c: c["ood"]["methods"]["knn"].__setitem__("k", []), "ood.methods.knn.k: is an empty list"),
    (lambda c: c["prototypes"]["methods"].pop("deepinversion"),
     "ood.methods.knn_deepinversion: fits on deepinversion prototypes: configure prototypes.methods.deepinversion"),
    (lambda c: c["probing"].__setitem__("prototypes", "caricatures"), "probing.prototypes: 'caricatures' is not one"),
    (lambda c: c.pop("probe_model"), "probe_model: prototypes need a probe_model"),
    (lambda c: c["labels"].__setitem__("layers", ["layer2"]), "labels.layers: ['layer2'] are not in models.tiny_resnet"),
    (lambda c: c["neurons"].__setitem__("layers", ["layer1"]), "neurons.layers: ['layer1'] are not in"),
    (lambda c: c["neurons"].__setitem__("dataset", "imagenet"), "neurons.dataset: names 'imagenet'"),
    (lambda c: c["emergence"].__setitem__("layers", ["layer3", "layer3"]), "emergence.layers: repeat a layer"),
    (lambda c: c["labels"]["invert"].__setitem__("dataset", "svhn"), "labels.invert.dataset: names 'svhn'"),
    (lambda c: (c["datasets"].__setitem__("mine", {"path": "data/mine"}),
                c["labels"]["invert"].__setitem__("dataset", "mine")),
     "labels.invert.attributes: labels.invert.dataset 'mine' is a folder of your own"),
])
def test_reference_problem_names_its_config_path(edit, message):
    config = tiny_config()
    edit(config)
    problems = reference_problems(validated(config))
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.__setitem__("target_models", ["tiny_resnet", "resnet"]),
     "target_models: names 'resnet', which is not defined in models"),
    (lambda c: c.__setitem__("target_models", ["tiny_resnet"]), "give target_model or target_models, not both"),
    (lambda c: c.pop("target_model"), "target_models: the config names no target model"),
    (lambda c: c["models"]["tiny_vgg"]["train"].__setitem__("seeds", [1, 2]),
     "probe_model: 'tiny_vgg' has several replicas"),
])
def test_target_model_problems(edit, message):
    config = tiny_config()
    edit(config)
    assert any(message in p for p in reference_problems(validated(config))), reference_problems(validated(config))


def test_layers_of_every_target_are_checked():
    config = tiny_config()
    config["models"]["other"] = {**config["models"]["tiny_resnet"], "layers": ["layer4"]}
    config["target_models"] = ["tiny_resnet", "other"]
    config.pop("target_model")
    assert reference_problems(validated(config)) == []  # neurons.layers defaults to each target's own layers
    config["neurons"]["layers"] = ["layer3"]
    assert reference_problems(validated(config)) == [
        "neurons.layers: ['layer3'] are not in models.other.layers ['layer4'] (the stage reads them from the feature "
        "store)"]


def test_every_reference_problem_is_reported_at_once():
    config = tiny_config()
    config["ood"]["ood_sets"] = ["svhn"]
    config["neurons"]["layers"] = ["layer1"]
    config["emergence"]["dataset"] = "imagenet"
    assert len(reference_problems(validated(config))) == 3


def test_every_kind_of_problem_comes_in_one_round():
    config = tiny_config()
    config["models"]["tiny_resnet"]["layers"] = ["layer3", "layer9"]  # penultimate layer4 is not one; layer9 no layer
    config["ood"]["ood_sets"] = "textures"  # the schema's: not a list (so neither 't' nor 'e' are data sets)
    problems = all_problems(config, workflow_schema())
    assert problems == [
        "ood.ood_sets: 'textures' is not of type 'array'",
        "models.tiny_resnet.penultimate: 'layer4' must be one of its layers ['layer3', 'layer9']",
        "labels.layers: ['layer4'] are not in models.tiny_resnet.layers ['layer3', 'layer9'] (the stage reads them "
        "from the feature store)",
        "models.tiny_resnet.layers: layer(s) ['layer9'] not in SmallResNet; 'layer9': nearest valid ['layer4', "
        "'layer3', 'layer2', 'layer1', 'layer4.0', 'layer3.0']; top-level layers: ['conv1', 'bn1', 'relu', 'layer1', "
        "'layer2', 'layer3', 'layer4', 'avgpool', 'fc'], nested ones by module path, e.g. 'layer1.0'",
        # the shape checks of a model with a wrong layer go as far as they can
        "neurons.vital.layers: 'layer4' is not a neuron layer of tiny_resnet (['layer3', 'layer9']): its patches are "
        "VITAL's references"], problems
    assert all_problems(config, workflow_schema(), inputs=False) == problems[:3]  # a job's process: no inputs


def test_emergence_grid_must_fit_every_analysed_layer():
    config = validated(tiny_config())  # 32 px input: layer3 4x4, layer4 2x2 maps; grid 2
    assert preflight.shape_problems(config, "tiny_resnet") == []
    config["emergence"]["grid"] = 3  # fits layer3, not layer4: one message with the value that fits both
    (problem,) = preflight.shape_problems(config, "tiny_resnet")
    assert problem == ("emergence.grid: 3 does not fit the maps of the analysed layers at 32 px (layer3 4x4, layer4 "
                       "2x2): choose 1 <= grid <= 2")


def test_caricature_layer_must_exist_in_the_target():
    config = validated(tiny_config())
    config["prototypes"]["methods"]["caricature"]["layer"] = "layer7"
    (problem,) = preflight.shape_problems(config, "tiny_resnet")
    assert problem.startswith("prototypes.methods.caricature.layer: layer(s) ['layer7'] not in SmallResNet")


def test_patch_window_must_fit_the_input():
    config = validated(tiny_config())
    config["neurons"]["patches"].update(mode="window", window_size=33)
    assert preflight.shape_problems(config, "tiny_resnet") == [
        "neurons.patches.window_size: 33 px exceeds the 32 px model input: choose 1 <= window_size <= 32 (or rf)"]
    config["neurons"]["patches"]["window_size"] = 32
    assert preflight.shape_problems(config, "tiny_resnet") == []


def test_input_size_comes_from_preprocessing_or_the_generated_size():
    config = validated(tiny_config())
    model = config["models"]["tiny_resnet"]
    assert preflight.input_size(config, "shapes_val", model) == 32
    assert preflight.input_size(config, "shapes_val", {**model, "preprocessing": {"resize": 40, "crop": 36}}) == 36
    config["datasets"]["mine"] = {"path": "anywhere"}
    assert preflight.input_size(config, "mine", model) is None  # a folder of one's own: sizes vary


def test_embedded_default_repeats_no_default():
    """config/config.yaml sets only what differs from the defaults (which live in the settings classes): each of its
    leaves, removed, would be filled in by the schema with another value, or not at all."""
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())

    def leaves(node, path=()):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, (*path, key))
            else:
                yield (*path, key), value

    repeated, schema = [], workflow_schema()  # generated once: the same for every leaf (0.15 s a time)
    for path, value in leaves(raw):
        config = copy.deepcopy(raw)
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        try:
            fill_defaults(config, copy.deepcopy(schema))  # as validated() does
            filled = config
        except Exception:  # a required key: not a default
            continue
        for key in path:
            filled = filled.get(key, {}) if isinstance(filled, dict) else None
        if filled == value and value != {}:
            repeated.append(".".join(path))
    assert repeated == [], repeated


def test_extract_shards_must_not_outnumber_the_batches(tmp_path):
    config = validated(tiny_config())  # shapes_train: 3 classes x 24 images = 72
    config["extract"].update(batch_size=8, shards={"shapes_train": 9})
    assert preflight.extract_shard_problems(config) == []
    config["extract"]["shards"] = {"shapes_train": 10}
    assert preflight.extract_shard_problems(config) == [
        "extract.shards.shapes_train: 10 shards, but its 72 images make 9 batch(es) of 8 (extract.batch_size): "
        "choose at most 9"]
    folder = tmp_path / "mine"
    for i in range(5):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"c{i % 2}" / f"{i}.png").write_bytes(b"")
    config["datasets"]["mine"] = {"path": str(folder)}
    config["extract"].update(batch_size=2, shards={"mine": 4})  # a folder of one's own: its 5 images counted
    assert preflight.extract_shard_problems(config) == [
        "extract.shards.mine: 4 shards, but its 5 images make 3 batch(es) of 2 (extract.batch_size): choose at most 3"]


def test_patch_shards_must_not_outnumber_a_layers_channel_batches():
    config = validated(tiny_config())  # neuron layers layer3, layer4: 16 channels each
    config["neurons"]["patches"] = {"channels": "all", "k": 2, "channel_batch": 5}  # 4 batches (5, 5, 5, 1)
    config["neurons"]["shards"] = {"patches": 4}
    assert preflight.patch_shard_problems(config, "tiny_resnet") == []
    config["neurons"]["shards"] = {"patches": 5}
    assert preflight.patch_shard_problems(config, "tiny_resnet") == [
        f"neurons.shards.patches: 5 shards, but the 16 selected channels of tiny_resnet's {layer} make 4 batch(es) "
        "of 5 (neurons.patches.channel_batch): choose at most 4" for layer in ("layer3", "layer4")]
    config["neurons"]["patches"]["channels"] = [3, 16]
    assert preflight.patch_shard_problems(config, "tiny_resnet") == [
        "neurons.patches.channels: patches: channel(s) [16] out of range: layer 'layer3' has 16 channels",
        "neurons.patches.channels: patches: channel(s) [16] out of range: layer 'layer4' has 16 channels"]
    del config["neurons"]["patches"]
    assert preflight.patch_shard_problems(config, "tiny_resnet") == [
        "neurons.shards.patches: there is no neurons.patches to shard"]


def test_dora_shards_must_not_outnumber_a_layers_batches():
    config = validated(tiny_config())  # layer4: 16 channels
    config["labels"]["dora"].update(batch_size=4)
    config["labels"]["shards"] = {"dora": 4}
    assert preflight.dora_shard_problems(config, "tiny_resnet") == []
    config["labels"]["shards"] = {"dora": 5}
    assert preflight.dora_shard_problems(config, "tiny_resnet") == [
        "labels.shards.dora: 5 shards, but the 16 neurons of tiny_resnet's layer4 make 4 batch(es) of 4 s-AMS "
        "(1 per neuron): choose at most 4"]
    config["labels"]["dora"].update(per_neuron=3)  # 48 s-AMS in batches of 4 would split neurons
    assert preflight.dora_shard_problems(config, "tiny_resnet") == [
        "labels.dora: DORA: batch_size 4 must be a multiple of per_neuron 3 when the 16 neurons take more than one "
        "batch"]

"""Checks before any job is submitted: user-provided folders and checkpoints, layer names, class indices."""

import pytest
import torch

from conftest import TINY_MODEL, write_folder
from peekflow.workflow import preflight
from peekflow.models.registry import build_model
from workflow import snakemake, tiny_config, write_config

WIDTHS = TINY_MODEL["arch_kwargs"]["widths"]


def test_image_folder_needs_an_image_in_a_class_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preflight.check_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"holds no images .* \(1 class folders\)"):
        preflight.check_image_folder(tmp_path / "empty")
    preflight.check_image_folder(write_folder(tmp_path / "images", ["a", "b"], per_class=1))


def test_layers_must_exist(tmp_path):
    model = preflight.abstract_model("small_resnet", 3, {"widths": WIDTHS})
    preflight.check_layers(model, ["layer3", "layer4.0"])
    with pytest.raises(ValueError, match=r"\['layer9'\] not in SmallResNet; 'layer9': nearest valid \[.*"
                                         r"top-level layers: \[.*'layer4'"):
        preflight.check_layers(model, ["layer4", "layer9"])


def test_checkpoint_must_load_and_fit(tmp_path, tiny_checkpoint):
    assert preflight.check_checkpoint(tiny_checkpoint, "small_resnet", 3)["classes"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="holds small_resnet with 3 classes, but the config asks for small_resnet with 4"):
        preflight.check_checkpoint(tiny_checkpoint, "small_resnet", 4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preflight.check_checkpoint(tmp_path / "gone.pt", "small_resnet", 3)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be loaded"):
        preflight.check_checkpoint(tmp_path / "junk.pt", "small_resnet", 3)


def test_plain_state_dict_is_checked_by_name_and_shape(tmp_path):
    state = build_model("small_resnet", 3, widths=WIDTHS).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    assert preflight.check_checkpoint(tmp_path / "plain.pt", "small_resnet", 3, {"widths": WIDTHS}) == {
        "format": "state_dict"}
    with pytest.raises(ValueError, match=r"shapes \['fc.bias \(3,\) != \(5,\)', 'fc.weight"):
        preflight.check_checkpoint(tmp_path / "plain.pt", "small_resnet", 5, {"widths": WIDTHS})
    with pytest.raises(ValueError, match=r"missing keys \['conv1.weight'"):
        torch.save({k: v for k, v in state.items() if k != "conv1.weight"}, tmp_path / "cut.pt")
        preflight.check_checkpoint(tmp_path / "cut.pt", "small_resnet", 3, {"widths": WIDTHS})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
        torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
        preflight.check_checkpoint(tmp_path / "extra.pt", "small_resnet", 3, {"widths": WIDTHS})


def user_model(checkpoint, **changes):
    """A model of the tiny config that loads a checkpoint instead of being trained."""
    spec = {key: TINY_MODEL[key] for key in ["arch", "num_classes", "arch_kwargs", "preprocessing"]}
    return {**spec, "layers": ["layer3", "layer4"], "penultimate": "layer4", "checkpoint": str(checkpoint), **changes}


def test_workflow_with_valid_user_inputs_plans_its_jobs(tmp_path, tiny_checkpoint):
    config = tiny_config()
    config["datasets"]["user_set"] = {"path": str(write_folder(tmp_path / "user_set", ["a", "b"], per_class=1))}
    config["models"]["user_model"] = user_model(tiny_checkpoint)
    result = snakemake(tmp_path, "-n", config=write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_bad_input_is_named_by_its_key_before_any_job(tmp_path, tiny_checkpoint):
    """In one round with the problems of the schema (an unknown key) and of names (a penultimate layer that is not
    one of the layers): what the preflight finds in the files and models comes in the same message."""
    (tmp_path / "empty_set").mkdir()
    torch.save(build_model("small_resnet", 3, widths=[8, 8, 8, 8]).state_dict(), tmp_path / "other_widths.pt")
    config = tiny_config()
    config["datasets"]["gone_set"] = {"path": str(tmp_path / "gone_set")}
    config["datasets"]["empty_set"] = {"path": str(tmp_path / "empty_set")}
    config["models"]["gone_model"] = user_model(tmp_path / "gone.pt")
    config["models"]["four_classes"] = user_model(tiny_checkpoint, num_classes=4)
    config["models"]["other_widths"] = user_model(tmp_path / "other_widths.pt")
    config["models"]["tiny_resnet"]["layers"] = ["layer3", "layer9", "layer4"]
    config["models"]["bad_layers"] = user_model(tiny_checkpoint, layers=["layer3", "layer5"], penultimate="layer4")
    config["emergence"]["gird"] = 2
    config["neurons"]["vital"]["match_layers"] = {"conv9": 1.0}  # checked although tiny_resnet has a wrong layer
    config["prototypes"]["methods"]["deepdream"]["classes"] = [0, 3]
    config["prototypes"]["methods"]["deepinversion"].update(targets="one", target=5)
    result = snakemake(tmp_path, "--cores", "1", config=write_config(tmp_path, config))
    assert result.returncode != 0
    for message in [
        f"datasets.gone_set.path: {tmp_path / 'gone_set'} does not exist",
        f"datasets.empty_set.path: {tmp_path / 'empty_set'} holds no images",
        f"models.gone_model.checkpoint: checkpoint {tmp_path / 'gone.pt'} does not exist",
        "models.four_classes.checkpoint: ", "but the config asks for small_resnet with 4",
        "models.other_widths.checkpoint: ", "does not fit small_resnet with 3 classes: its tensors are 8 wide where "
        "the model's are 4 (e.g. bn1.bias (8,) != (4,)): set models.other_widths.arch_kwargs.widths", "shapes [",
        "models.tiny_resnet.layers: layer(s) ['layer9'] not in SmallResNet",
        "models.bad_layers.penultimate: 'layer4' must be one of its layers ['layer3', 'layer5']",
        "models.bad_layers.layers: layer(s) ['layer5'] not in SmallResNet",
        "emergence.gird: unknown key (did you mean grid?)",
        "neurons.vital.match_layers: VITAL: match layer(s) ['conv9'] are not layers of SmallResNet",
        "prototypes.methods.deepdream.classes: classes [3] are not class indices of a model with 3 classes",
        "prototypes.methods.deepinversion.target: 5 is not a class index of 'tiny_resnet' (3 classes)",
    ]:
        assert message in result.stderr, (message, result.stderr[-3000:])
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


# --- semantics: WordNet installed, every class of the targets and the probe mapped to a WordNet 3.0 noun synset

SHAPES = {"circle": "circle.n.01", "square": "square.n.01", "triangle": "triangle.n.01"}


def needs_wordnet():
    from workflow import wordnet_missing

    reason = wordnet_missing()
    if reason:
        pytest.skip(f"WordNet 3.0 is not installed: {reason}")


def semantics_problems(config: dict) -> list[str]:
    from peekflow.workflow import replicas
    from test_config_checks import validated

    return preflight.semantics_problems(replicas.expand(validated(config)))


def wnid_probe(tmp_path, folders) -> dict:
    """A probe model whose classes are the (ImageNet-style) folder names of an image folder: a plain state dict,
    which records no class names."""
    torch.save(build_model("small_resnet", 3, widths=WIDTHS).state_dict(), tmp_path / "plain.pt")
    return user_model(tmp_path / "plain.pt", classes_from_folder=str(write_folder(tmp_path / "wnids", folders, 1)))


def test_semantics_maps_every_class_or_names_the_key(tmp_path):
    needs_wordnet()
    config = tiny_config() | {"semantics": {"synsets": SHAPES}}
    assert semantics_problems(config) == []
    config["semantics"]["synsets"] = {"circle": "circel.n.01", "square": "square.n.01", "hexagon": "hexagon.n.01"}
    config["models"]["wnid_probe"] = wnid_probe(tmp_path, ["n01440764", "n01443537", "n99999999"])
    config["probe_model"] = "wnid_probe"
    found = semantics_problems(config)
    for message in ["semantics.synsets.circle: 'circel.n.01' is not a WordNet 3.0 synset name",
                    "semantics.synsets.triangle: class 'triangle' has no synset",
                    "models.wnid_probe.classes_from_folder: class folder 'n99999999' is not a WordNet 3.0 noun offset "
                    "(map it in semantics.synsets.n99999999)",
                    "semantics.synsets.hexagon: no class 'hexagon' among the classes of"]:
        assert sum(message in p for p in found) == 1, (message, found)
    assert len(found) == 4, found


def test_semantics_output_layer_must_give_one_unit_per_class():
    needs_wordnet()
    config = tiny_config() | {"semantics": {"synsets": SHAPES, "output_layer": "fcc"}}
    (found,) = semantics_problems(config)
    assert found.startswith("semantics.output_layer: layer(s) ['fcc'] not in SmallResNet;"), found
    config["semantics"]["output_layer"] = "layer4"
    assert semantics_problems(config) == ["semantics.output_layer: 'layer4' of tiny_resnet has 16 units, not one per "
                                          "class (3): name the layer whose outputs are the logits"]
    config.pop("labels")  # no DORA: no output layer to check
    assert semantics_problems(config) == []


def test_missing_wordnet_stops_before_any_job_saying_how_to_install(tmp_path):
    pytest.importorskip("nltk")
    config = tiny_config() | {"semantics": {"synsets": SHAPES, "wordnet": str(tmp_path / "nowhere")}}
    result = snakemake(tmp_path, "--cores", "1", config=write_config(tmp_path, config))
    assert result.returncode != 0
    assert f"semantics.wordnet: {tmp_path / 'nowhere'} holds no WordNet database (no data.noun)" in result.stderr
    assert "apt-get install wordnet-base" in result.stderr and "set semantics.wordnet to a folder" in result.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_bad_class_semantics_stop_the_workflow_before_any_job(tmp_path):
    needs_wordnet()
    config = tiny_config()
    config["semantics"]["synsets"] = {"circle": "circle.n.99", "square": "square.n.01"}
    config["models"]["wnid_probe"] = wnid_probe(tmp_path, ["n01440764", "n01443537", "n00000000"])
    config["probe_model"] = "wnid_probe"
    result = snakemake(tmp_path, "--cores", "1", config=write_config(tmp_path, config))
    assert result.returncode != 0
    for message in ["semantics.synsets.circle: 'circle.n.99' is not a WordNet 3.0 synset name",
                    "semantics.synsets.triangle: class 'triangle' has no synset",
                    "models.wnid_probe.classes_from_folder: class folder 'n00000000' is not a WordNet 3.0 noun offset"]:
        assert message in result.stderr, (message, result.stderr[-3000:])
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()

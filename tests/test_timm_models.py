"""timm models by name, offline: building, local weights through timm's filters, preprocessing from timm's data
config, unknown names with close matches, nested layer names checked before any job."""

import pytest
import torch
from safetensors.torch import save_file

from peekflow.workflow import preflight
from peekflow.workflow.config_checks import schema_problems
from peekflow.models.checkpoint import load_model
from peekflow.models.registry import build_model
from peekflow.models.spec import ModelSpec
from peekflow.workflow.replicas import expand
from workflow import ROOT, tiny_config

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

VIT = "timm/vit_small_patch16_224"
SMALL = {"img_size": 32, "depth": 2}


def test_timm_model_builds_by_name_with_num_classes():
    model = build_model(VIT, 7, **SMALL)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_unknown_timm_name_fails_with_close_matches():
    with pytest.raises(ValueError, match=r"timm knows no model 'vit_smal_patch16_224'; close matches: \[.*vit_small"):
        build_model("timm/vit_smal_patch16_224", 3)
    problems = preflight.model_problems("m", {"arch": "timm/vit_smal_patch16_224", "num_classes": 3,
                                              "layers": ["blocks.0"], "penultimate": "fc_norm"})
    assert problems and problems[0].startswith("models.m.arch: timm knows no model")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_load_from_a_local_file_through_timms_filter(tmp_path, suffix):
    source = build_model(VIT, 5, **SMALL)
    state = source.state_dict()
    # a ViT checkpoint at another resolution: timm's own filter resizes the position embedding to the model's grid
    state["pos_embed"] = torch.randn(1, 1 + 4 * 4, state["pos_embed"].shape[-1])
    path = tmp_path / f"vit{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    meta = preflight.check_checkpoint(path, VIT, 5, SMALL)
    assert meta["format"] == "state_dict"
    model, _ = load_model(path, VIT, 5, SMALL)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert model.pos_embed.shape == source.pos_embed.shape
    with pytest.raises(ValueError, match=r"does not fit timm/vit_small_patch16_224 with 6 classes: its head has 5 "
                                         r"outputs, the model 6: set models.<name>.num_classes: 5 .*shapes \['head"):
        preflight.check_checkpoint(path, VIT, 6, SMALL)


def test_preprocessing_defaults_to_timms_data_config():
    prep = ModelSpec("m", VIT, 3, arch_kwargs=SMALL).preprocess()
    assert (prep.crop, prep.resize, prep.interpolation) == (32, 35, "bicubic")  # crop_pct 0.9
    assert prep.mean == [0.5, 0.5, 0.5]
    given = ModelSpec("m", VIT, 3, arch_kwargs=SMALL, preprocessing={"resize": 40, "crop": 32}).preprocess()
    assert (given.resize, given.mean) == (40, [0.485, 0.456, 0.406])


def test_nested_layers_are_checked_with_nearby_names():
    model = preflight.abstract_model(VIT, 3, SMALL)
    preflight.check_layers(model, ["blocks.1", "blocks.0.attn", "fc_norm"])
    with pytest.raises(ValueError, match=r"'blocks.11': nearest valid \['blocks.1'.*top-level layers: \[.*'blocks'"):
        preflight.check_layers(model, ["blocks.11"])
    tv = preflight.abstract_model("resnet18", 3)
    with pytest.raises(ValueError, match=r"'layer4.3': nearest valid \[.*'layer4.1'.*nested ones by module path"):
        preflight.check_layers(tv, ["layer4.3"])


def timm_target(**arch_kwargs):
    """The tiny config with a timm ViT as its target, no preprocessing given (timm's data config then applies)."""
    config = tiny_config()
    config.pop("emergence")  # its grid is sized for the tiny ResNet's maps
    model = config["models"][config["target_model"]]
    model.pop("preprocessing")
    model.update(arch=VIT, arch_kwargs={"depth": 2, **arch_kwargs}, layers=["blocks.1"], penultimate="blocks.1")
    config["prototypes"]["methods"]["caricature"]["layer"] = "blocks.0"  # the tiny ResNet's layer3 is not a ViT's
    return config


def test_preprocessing_may_be_left_out_for_timm_models_only():
    config = timm_target(img_size=32)
    assert schema_problems(config, SCHEMA) == []
    config["models"][config["target_model"]]["arch"] = "resnet18"
    assert schema_problems(config, SCHEMA) == ["models.tiny_resnet: 'preprocessing' is a required property"]


def test_token_layer_without_a_patch_grid_is_refused_before_any_job():
    assert preflight.shape_problems(timm_target(img_size=32), "tiny_resnet") == []
    # 40 px with padding: a 3x3 grid of 16 px patches that the 40 px input does not tile
    problems = preflight.shape_problems(timm_target(img_size=40, dynamic_img_size=True, dynamic_img_pad=True),
                                        "tiny_resnet")
    assert problems == ["neurons.layers: ['blocks.1'] give no spatial map at 40 px (vectors, or tokens that are not "
                        "class/register tokens + a square grid of patch tokens): patches need one"]


def test_a_vit_built_for_another_input_size_is_refused_before_any_job():
    config = timm_target(img_size=32)
    config["models"][config["target_model"]]["preprocessing"] = {"crop": 48}
    expected = ("models.tiny_resnet: the model does not run on the input size of its preprocessing (set "
                "preprocessing.crop, or arch_kwargs such as img_size): Input height (48) doesn't match model (32).")
    assert expected in preflight.input_problems(expand(config))

"""Errors that say the cause: a checkpoint that does not fit names the difference in structure and the config key to
change; a method refused for an architecture names what works there; a timm model's default preprocessing that crops
says so, with the key that overrides it (log, store, score file, table)."""

import json

import pytest
import torch

from conftest import write_folder
from peekflow.models.checkpoint import load_model
from peekflow.models.registry import build_model
from peekflow.workflow.preflight import check_checkpoint

VIT = "timm/vit_tiny_patch16_224"
SMALL = {"img_size": 32, "patch_size": 8}  # a 16-token ViT: cheap to build


def saved(tmp_path, name, arch, num_classes=3, **kwargs):
    path = tmp_path / name
    torch.save(build_model(arch, num_classes, **kwargs).state_dict(), path)  # a plain state dict, as users save them
    return path


def misfit(path, arch, num_classes=3, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        check_checkpoint(path, arch, num_classes, kwargs, "models.mine")
    return str(err.value)


def test_a_vit_checkpoint_of_another_depth_names_the_block_counts_and_the_key(tmp_path):
    path = saved(tmp_path, "vit4.pth", VIT, depth=4, **SMALL)
    message = misfit(path, VIT, **SMALL)  # the model: timm's default depth of 12
    assert message.startswith(f"{path} does not fit {VIT} with 3 classes: the checkpoint has 4 blocks under "
                              "'blocks' where the model has 12: set models.mine.arch_kwargs.depth: 4; missing keys "
                              "['blocks.10.attn.proj.bias'"), message
    assert check_checkpoint(path, VIT, 3, {**SMALL, "depth": 4}) == {"format": "state_dict"}  # the fix fits


def test_a_resnet_checkpoint_for_a_vit_says_it_looks_like_a_resnet(tmp_path):
    message = misfit(saved(tmp_path, "r18.pth", "resnet18"), VIT, **SMALL)
    assert ("the checkpoint looks like a ResNet (key layer1.0.conv1.weight; torchvision's resnet18 by its block "
            "counts), not a vision transformer (timm ViT/DeiT) like the model: set models.mine.arch to the "
            "architecture it was saved from (e.g. resnet18 or timm/resnet18); missing keys") in message, message


def test_a_resnet_of_other_block_counts_names_the_torchvision_resnet(tmp_path):
    message = misfit(saved(tmp_path, "r18.pth", "resnet18"), "resnet50")
    assert ("the checkpoint has 2 blocks under 'layer1' where the model has 3, 2 blocks under 'layer2' where the "
            "model has 4") in message
    assert "set models.mine.arch to resnet18 (or timm/resnet18), whose block counts these are" in message
    assert "wide where" not in message  # the widths follow from the other architecture: not a cause of their own


def test_other_block_counts_of_a_model_that_takes_them_name_its_argument(tmp_path):
    message = misfit(saved(tmp_path, "small.pt", "small_resnet", blocks=(2, 2, 1, 1)), "small_resnet")
    assert ("the checkpoint has 2 blocks under 'layer1' where the model has 1, 2 blocks under 'layer2' where the "
            "model has 1: set models.mine.arch_kwargs.blocks to the checkpoint's block counts") in message, message


def test_a_head_of_another_size_and_other_widths_name_their_keys(tmp_path):
    path = saved(tmp_path, "vit_w96.pth", VIT, 7, depth=2, embed_dim=96, num_heads=3, **SMALL)
    message = misfit(path, VIT, depth=2, **SMALL)
    assert "its head has 7 outputs, the model 3: set models.mine.num_classes: 7 (and its class names)" in message
    assert ("its tensors are 96 wide where the model's are 192 (e.g. blocks.0.attn.proj.bias (96,) != (192,)): set "
            "models.mine.arch_kwargs.embed_dim: 96") in message


def test_loading_says_the_same_as_the_check(tmp_path):
    path = saved(tmp_path, "vit4.pth", VIT, depth=4, **SMALL)
    with pytest.raises(ValueError, match=r"does not fit .* the checkpoint has 4 blocks under 'blocks' where the model "
                                         r"has 12: set models.mine.arch_kwargs.depth: 4"):
        load_model(path, VIT, 3, SMALL, "models.mine")
    model, meta = load_model(path, VIT, 3, {**SMALL, "depth": 4}, "models.mine")
    assert meta == {"format": "state_dict"} and len(model.blocks) == 4


def test_bn_fisher_on_a_vit_names_the_methods_that_work_there():
    from peekflow.workflow.preflight import model_fit_problems

    vit = {"arch": VIT, "num_classes": 3, "arch_kwargs": {**SMALL, "depth": 2}, "layers": ["norm"],
           "penultimate": "norm"}
    config = {"models": {"vit": vit}, "target_models": ["vit"], "ood": {"methods": {"msp": {}, "bn_fisher": {}}}}
    (problem,) = model_fit_problems(config)
    assert problem.startswith(f"ood.methods.bn_fisher: vit ({VIT}): 'norm' block 0 (LayerNorm) is not a residual "
                              "block ending in batch norm"), problem
    assert ("OOD methods that work on vit: from its outputs alone ash_b, ash_p, ash_s, energy, entropy, gen, "
            "gradnorm, maxlogit, msp, odin, scale; data-free on DeepDream prototypes <method>_deepdream (e.g. "
            "knn_deepdream); fitted on ood.id_train dice,") in problem
    assert "bn_gaussian" not in problem and "deepinversion" not in problem  # needs batch norms: not offered


def test_vital_match_layers_of_a_resnet_on_a_vit_suggest_its_blocks():
    from peekflow.neurons.vital import DEFAULT_MATCH, match_layers_for

    model = build_model(VIT, 3, depth=3, **SMALL)
    with pytest.raises(ValueError, match=r"match layer\(s\) \['conv1', 'layer1', 'layer2', 'layer3'\] are not layers "
                                         r"of VisionTransformer \(the defaults name a ResNet's layers\); set "
                                         r"neurons.vital.match_layers to layers before 'blocks.2', e.g. "
                                         r"\{'blocks.0': 1.0, 'blocks.1': 1.0\}"):
        match_layers_for(model, "blocks.2", DEFAULT_MATCH)
    assert match_layers_for(model, "blocks.2", {"blocks.0": 1.0, "blocks.1": 1.0}) == {"blocks.0": 1.0,
                                                                                      "blocks.1": 1.0}


def test_a_timm_crop_is_noted_in_the_log_the_store_the_scores_and_the_table(tmp_path, caplog):
    import h5py

    from peekflow.cli import main
    from peekflow.ood.scoring import read_notes, score_stores
    from peekflow.ood.table import build_table, write_table

    spec = {"name": "vit", "arch": VIT, "num_classes": 3, "arch_kwargs": {**SMALL, "depth": 1},
            "classes": ["a", "b", "c"]}
    path = saved(tmp_path, "vit.pth", VIT, **spec["arch_kwargs"])
    stores = {}
    for name, seed in [("val", 0), ("ood", 1)]:
        images = write_folder(tmp_path / name, ["a", "b", "c"], per_class=2, seed=seed)
        stores[name] = tmp_path / f"{name}.h5"
        with caplog.at_level("INFO", logger="peekflow"):
            assert main(["extract", "--checkpoint", str(path), "--model", json.dumps(spec), "--images", str(images),
                         "--dataset-name", name, "--settings", json.dumps({"layers": ["norm"]}),
                         "--out", str(stores[name])]) == 0
    note = ("models.vit.preprocessing is not given, so timm's data config sets it: the shorter side resized to 35 px, "
            "then a centre crop of 32 px (bicubic), which cuts off 16% of a square image; for a model trained on "
            "whole 32 px images set models.vit.preprocessing: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: "
            "[0.5, 0.5, 0.5]}")
    assert note in caplog.messages
    with h5py.File(stores["val"]) as h5:
        assert json.loads(h5.attrs["notes"]) == [note]
    files = {}
    for method in ("msp", "energy"):
        files[f"vit/{method}"] = tmp_path / f"{method}.h5"
        score_stores(method, {}, "norm", None, stores, files[f"vit/{method}"])
        assert read_notes(files[f"vit/{method}"]) == [note]
    table = build_table(files, "val", ["ood"], n_bootstrap=0)
    assert set(table.notes) == {note}
    write_table(table, tmp_path / "table.csv", tmp_path / "table.md")
    assert (tmp_path / "table.md").read_text().count(note) == 1  # the note of every method, listed once
    assert f"- every method: {note}" in (tmp_path / "table.md").read_text()

"""VITAL (peekflow.neurons.vital) and the relevance it reads (peekflow.synthesis.relevance, zennit).

Relevance: LRP conserves a channel's relevance through every layer (the residual sums included, by the canonizers),
the plain-gradient method equals autograd, Guided Backprop equals its rule written out on a small ReLU net, and the
model is left as it was. VITAL: the matching loss is zero for a synthetic image equal to its only reference and equals
a brute-force sorted-value distance; over several seeds the VITAL image's feature distributions sit closer to the
references' than the plain visualisation's; bad channels and layers fail naming them; the files round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from peekflow.models.layers import record_layers
from peekflow.models.registry import build_model
from peekflow.synthesis.relevance import channel_relevance, class_relevance, unit_range

LAYERS = ["conv1", "layer1", "layer2", "layer3"]
NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def small_resnet(seed=0, biases=True):
    """Random batch-norm statistics, so merging them matters; biases=False: running means 0, so the merged
    convolutions have no bias (a bias absorbs relevance: LRP conserves it exactly only without them)."""
    torch.manual_seed(seed)
    model = build_model("small_resnet", 3, widths=[4, 8, 8, 8]).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2) if biases else m.running_mean.zero_()
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("arch", ["small_resnet", "resnet18"])
def test_lrp_conserves_the_channels_relevance_through_residual_blocks(arch):
    if arch == "resnet18":
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=3).eval()
    else:
        model = small_resnet(biases=False)
    x = torch.randn(3, 3, 32, 32)
    channels = [0, 1, 2]
    rel, out = channel_relevance(model, x, "layer4", channels, LAYERS)
    start = out[torch.arange(3), channels].clamp_min(0).flatten(1).sum(1)
    assert float(start.min()) > 0
    for layer in LAYERS:
        # without biases the rules conserve relevance up to their stabilisers (within 3% here); a residual sum
        # without the canonizer would double it at every block
        np.testing.assert_allclose(rel[layer].flatten(1).sum(1), start, rtol=0.05, err_msg=layer)


def test_gradient_method_is_autograd_and_model_is_left_unchanged():
    model = small_resnet()
    x = torch.randn(2, 3, 32, 32)
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with record_layers(model, ["layer2", "layer4"]) as acts:
        model(x.clone().requires_grad_(True))
    seed = torch.zeros_like(acts["layer4"])
    seed[0, 1], seed[1, 2] = acts["layer4"][0, 1].clamp_min(0), acts["layer4"][1, 2].clamp_min(0)
    want, = torch.autograd.grad(acts["layer4"], acts["layer2"], grad_outputs=seed.detach())
    got, _ = channel_relevance(model, x, "layer4", [1, 2], ["layer2"], method="gradient")
    torch.testing.assert_close(got["layer2"], want)
    for method in ("epsilon_plus_flat", "guided_backprop"):
        channel_relevance(model, x, "layer4", [1, 2], ["layer2"], method=method)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # no hook or merged weight left behind
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_guided_backprop_is_its_rule_written_out():
    torch.manual_seed(1)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(4, 5, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    got, out = channel_relevance(net, x, "relu2", [3, 0], ["relu1"], method="guided_backprop")
    # by hand: the seed on relu2's output; a ReLU passes a gradient only where its input > 0 and the gradient > 0
    h1 = net.relu1(net.conv1(x))
    z2 = net.conv2(h1)
    seed = torch.zeros_like(z2)
    seed[0, 3], seed[1, 0] = out[0, 3], out[1, 0]
    g = seed * (z2 > 0)
    g = g.clamp_min(0)
    want = torch.nn.grad.conv2d_input(h1.shape, net.conv2.weight, g, padding=1)
    torch.testing.assert_close(got["relu1"], want, rtol=1e-5, atol=1e-6)


def test_class_relevance_explains_the_predicted_class():
    model = small_resnet(biases=False)
    nn.init.zeros_(model.fc.bias)
    x = torch.randn(2, 3, 32, 32)
    rel, logits = class_relevance(model, x, ["layer4"])
    np.testing.assert_allclose(rel["layer4"].flatten(1).sum(1), logits.max(1).values.clamp_min(0), rtol=1e-3)


def test_unit_range_scales_each_map():
    r = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]]])
    torch.testing.assert_close(unit_range(r), torch.tensor([[[[0.0, 0.5], [0.25, 1.0]]]]), atol=1e-5, rtol=0)


def _match(model, images, references, channels, layers):
    from peekflow.neurons.vital import match_objective, reference_targets
    from peekflow.synthesis.objective import Activations

    targets, importance = reference_targets(model, references, "layer4", channels, layers, "epsilon_plus_flat", NORM)
    objective = match_objective(model, "layer4", channels, layers, targets, importance, "epsilon_plus_flat", NORM)
    x = (images - 0.5) / 0.25
    with torch.no_grad(), record_layers(model, list(layers)) as acts:
        model(x)
    return objective(Activations(images=images, logits={}, layers={("model", k): v for k, v in acts.items()}))


def test_matching_loss_is_zero_on_the_reference_itself_and_a_sorted_distance_otherwise():
    model = small_resnet()
    torch.manual_seed(3)
    refs = torch.rand(2, 1, 3, 32, 32)
    layers = {"layer1": 1.0, "layer2": 0.5}
    same = _match(model, refs[:, 0], refs, [0, 1], layers)
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-10, rtol=0)
    other = torch.rand(2, 3, 32, 32)
    got = _match(model, other, refs, [0, 1], layers)
    # brute force: per channel j of each layer, the squared distance between the two sorted value lists
    want = torch.zeros(2)
    x_ref, x_syn = (refs[:, 0] - 0.5) / 0.25, (other - 0.5) / 0.25
    r_ref, _ = channel_relevance(model, x_ref, "layer4", [0, 1], list(layers))
    r_syn, _ = channel_relevance(model, x_syn, "layer4", [0, 1], list(layers))
    with torch.no_grad(), record_layers(model, list(layers)) as a_ref:
        model(x_ref)
    with torch.no_grad(), record_layers(model, list(layers)) as a_syn:
        model(x_syn)
    for name, w in layers.items():
        peak = r_ref[name].amax(dim=(2, 3))
        imp = (peak - peak.amin(1, keepdim=True)) / (peak.amax(1, keepdim=True) - peak.amin(1, keepdim=True) + 1e-6)
        for b in range(2):
            for j in range(a_ref[name].shape[1]):
                s_ref = np.sort((unit_range(r_ref[name])[b, j] * a_ref[name][b, j]).flatten().numpy())
                s_syn = np.sort((unit_range(r_syn[name])[b, j] * a_syn[name][b, j]).flatten().numpy())
                want[b] += w * float(imp[b, j]) * float(((s_syn - s_ref) ** 2).mean()) / a_ref[name].shape[1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vital_images_match_the_references_distributions_better_than_plain(seed):
    from peekflow.data.folder import Preprocessing
    from peekflow.neurons.vital import VitalSettings, vital_channels

    model = small_resnet(seed)
    gen = torch.Generator().manual_seed(seed)
    refs = (torch.rand(3, 2, 3, 32, 32, generator=gen) * 255).round().to(torch.uint8).numpy()
    # a light prior (tv 0.5, not the default 200, chosen for the default's 64 px images): this test is about the term
    s = VitalSettings(steps=24, batch_size=3, references=2, match_layers={"layer1": 1.0, "layer2": 1.0}, tv=0.5,
                      seed=seed)
    prep = Preprocessing(mean=NORM[0], std=NORM[1], resize=32)
    result = vital_channels(model, "layer4", np.array([0, 3, 5]), refs, prep, s)
    assert result.plain.shape == result.vital.shape == (3, 3, 32, 32)
    assert result.references.shape == (3, 2, 3, 32, 32)
    assert set(result.seconds) == {"plain", "vital"} and (result.seconds["vital"] > 0).all()
    refs_t = torch.as_tensor(result.references)
    layers = dict(s.match_layers)
    plain = _match(model, torch.as_tensor(result.plain), refs_t, [0, 3, 5], layers)
    vital = _match(model, torch.as_tensor(result.vital), refs_t, [0, 3, 5], layers)
    assert float(vital.mean()) < 0.7 * float(plain.mean()), (vital, plain)


def test_greyscale_references_give_grey_visualisations_colour_ones_colour():
    from peekflow.data.folder import Preprocessing
    from peekflow.neurons.vital import VitalSettings, vital_channels

    model = small_resnet()
    grey = np.repeat(np.random.default_rng(0).integers(0, 255, (2, 2, 1, 16, 16), dtype=np.uint8), 3, axis=2)
    s = VitalSettings(steps=3, batch_size=2, references=2, match_layers={"layer1": 1.0})
    prep = Preprocessing(mean=NORM[0], std=NORM[1])
    result = vital_channels(model, "layer3", np.array([0, 1]), grey, prep, s)
    assert result.grey
    for images in (result.plain, result.vital):
        assert np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 1], images[:, 2])
    colour = grey.copy()
    colour[0, 0, 0, 0, 0] += 1  # one pixel of one reference off grey: a colour model
    result = vital_channels(model, "layer3", np.array([0, 1]), colour, prep, s)
    assert not result.grey and not np.array_equal(result.plain[:, 0], result.plain[:, 1])


def test_match_layers_after_the_target_are_skipped_and_none_left_fails():
    from peekflow.neurons.vital import match_layers_for

    model = small_resnet()
    assert match_layers_for(model, "layer2", {"conv1": 0.1, "layer1": 1, "layer3": 1}) == {"conv1": 0.1, "layer1": 1}
    with pytest.raises(ValueError, match="none of the match layers .* comes before 'layer1'"):
        match_layers_for(model, "layer1", {"layer3": 1.0})
    with pytest.raises(ValueError, match="layer4x"):
        match_layers_for(model, "layer4", {"layer4x": 1.0})


def _patch_folder(path, channels=(0, 1), k=2, side=16):
    from peekflow.neurons.patch_files import write_patch_folder
    from peekflow.neurons.patches import Patches

    n = len(channels)
    rng = np.random.default_rng(0)
    p = Patches(channels=np.asarray(channels), rows=np.zeros((n, k), np.int64), paths=np.full((n, k), "x.png", object),
                boxes=np.zeros((n, k, 4), np.int64), activations=np.ones((n, k), np.float32),
                pixels=rng.integers(0, 255, (n, k, 3, side, side), dtype=np.uint8))
    write_patch_folder(path, p, {"layer": "layer4", "model": "m"})
    return p


def test_channels_without_patches_fail_naming_them(tmp_path):
    from peekflow.neurons.vital import VitalSettings
    from peekflow.neurons.vital_files import reference_images

    p = _patch_folder(tmp_path / "patches", channels=(0, 1))
    layer, chosen, refs = reference_images(tmp_path / "patches", None, VitalSettings(channels="all", references=1))
    assert layer == "layer4" and chosen.tolist() == [0, 1] and np.array_equal(refs, p.pixels[:, :1])
    with pytest.raises(ValueError, match=r"channel\(s\) \[5\] of layer 'layer4' have no patches in .*patches"):
        reference_images(tmp_path / "patches", None, VitalSettings(channels=[1, 5]))
    with pytest.raises(ValueError, match="needs the layer's top-N file"):
        reference_images(tmp_path / "patches", None, VitalSettings(reference="images"))


def test_vital_file_round_trip_and_cli(tmp_path, tiny_checkpoint, capsys):
    from conftest import TINY_MODEL
    from peekflow.cli import main
    from peekflow.neurons.vital_files import read_vital, summary_rows

    _patch_folder(tmp_path / "patches", channels=(0, 1, 2), side=32)
    out = tmp_path / "vital.h5"
    assert main(["vital", "--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                 "--patches", str(tmp_path / "patches"), "--settings", json.dumps({"channels": "1:3", "steps": 2}),
                 "--probe-model", json.dumps(TINY_MODEL), "--probe-checkpoint", str(tiny_checkpoint), "--probe-layer",
                 "layer4", "--device", "cpu", "--out", str(out), "--grid", str(tmp_path / "vital.png")]) == 0
    data, attrs = read_vital(out)
    assert data["channels"].tolist() == [1, 2] and data["vital"].dtype == np.uint8
    assert data["vital"].shape == data["plain"].shape == (2, 3, 32, 32)
    assert set(data) >= {"activation/plain", "activation/vital", "activation/reference", "similarity/plain",
                         "similarity/vital", "similarity/reference", "cpu_seconds/plain", "cpu_seconds/vital"}
    assert attrs["layer"] == "layer4" and json.loads(attrs["settings"])["channels"] == "1:3" and not attrs["grey"]
    assert json.loads(attrs["probe"]) == {"model": "tiny", "layer": "layer4"}
    assert (tmp_path / "vital.png").stat().st_size > 0
    assert summary_rows([out])[0]["channels"] == 2
    assert main(["vital", "--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                 "--patches", str(tmp_path / "patches"), "--probe-layer", "layer4", "--out", str(tmp_path / "x.h5")]) == 1
    assert "--probe-model, --probe-checkpoint and --probe-layer go together" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_bad_vital_config_is_named_before_any_job(tmp_path):
    from peekflow.workflow.preflight import vital_problems
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()  # neurons.patches.channels "0:2"; neuron layers: the target's layer3, layer4
    config["neurons"]["vital"] = {"layers": ["layer1", "layer3", "layer4"], "channels": [1, 3],
                                  "match_layers": {"layer3": 1.0}}
    problems = vital_problems(config, "tiny_resnet")
    assert problems == [
        "neurons.vital.layers: 'layer1' is not a neuron layer of tiny_resnet (['layer3', 'layer4']): its patches are "
        "VITAL's references",
        "neurons.vital.match_layers: VITAL: none of the match layers ['layer3'] comes before 'layer3'; set "
        "neurons.vital.match_layers to earlier layers of the model, e.g. {'bn1': 1.0, 'layer1': 1.0, 'layer2': 1.0}",
        "neurons.vital.channels: channel(s) [3] of tiny_resnet's layer3 get no patches (neurons.patches.channels: "
        "'0:2')",
        "neurons.vital.channels: channel(s) [3] of tiny_resnet's layer4 get no patches (neurons.patches.channels: "
        "'0:2')"], problems
    config["neurons"]["vital"] = {"layers": ["layer4"], "channels": "0:99"}
    result = snakemake(tmp_path, "--cores", "1", config=write_config(tmp_path, config))
    assert result.returncode != 0
    assert "neurons.vital.channels: channel(s) [16, 17, 18, 19, 20" in result.stderr, result.stderr[-2000:]
    assert "out of range: layer 'layer4' has 16 channels" in result.stderr
    assert not (tmp_path / "results").exists()


def test_transformer_token_layers_get_relevance_and_lrp_is_refused():
    """A ViT's token layers are read as maps (copies off the input-to-target path): the gradient must be taken at
    the tokens themselves. zennit has no LRP rules for attention, so epsilon_plus_flat fails naming the model."""
    from peekflow.data.folder import Preprocessing
    from peekflow.neurons.vital import VitalSettings, vital_channels

    torch.manual_seed(0)
    vit = build_model("timm/vit_small_patch16_224", 3, img_size=32, patch_size=8, embed_dim=48, depth=3,
                      num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    rel, out = channel_relevance(vit, x, "blocks.2", [0, 5], ["blocks.0", "blocks.1"], method="gradient")
    assert rel["blocks.0"].shape == out.shape == (2, 48, 4, 4) and float(rel["blocks.0"].abs().sum()) > 0
    with record_layers(vit, ["blocks.1", "blocks.2"]) as acts:  # autograd on the tokens, read as a map
        tokens = {}
        handle = vit.blocks[1].register_forward_hook(lambda _m, _i, o: tokens.__setitem__("t", o))
        vit(x.clone().requires_grad_(True))
        handle.remove()
    seed = torch.zeros_like(acts["blocks.2"])
    seed[0, 0], seed[1, 5] = acts["blocks.2"][0, 0].clamp_min(0), acts["blocks.2"][1, 5].clamp_min(0)
    want, = torch.autograd.grad(acts["blocks.2"], tokens["t"], grad_outputs=seed.detach())
    torch.testing.assert_close(rel["blocks.1"], want[:, 1:].transpose(1, 2).reshape(2, 48, 4, 4))
    with pytest.raises(ValueError, match="no rules for the attention and layer norms of VisionTransformer"):
        channel_relevance(vit, x, "blocks.2", [0, 5], ["blocks.1"])
    refs = (np.random.default_rng(0).random((2, 2, 3, 32, 32)) * 255).astype(np.uint8)
    s = VitalSettings(steps=3, batch_size=2, references=2, relevance="guided_backprop",
                      match_layers={"blocks.0": 1.0, "blocks.1": 1.0})
    result = vital_channels(vit, "blocks.2", np.array([0, 5]), refs, Preprocessing(mean=[0.5] * 3, std=[0.5] * 3), s)
    assert not np.array_equal(result.plain, result.vital)  # the matching term reaches the image


def test_lrp_on_a_transformer_is_named_before_any_job():
    from peekflow.workflow.preflight import ranking_problems

    vit = {"arch": "timm/vit_small_patch16_224", "num_classes": 3,
           "arch_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}}
    config = {"models": {"v": vit}, "neurons": {"ranking": {"rank_by": "relevance"}}}
    assert ranking_problems(config, "v") == [
        "neurons.ranking.relevance: relevance epsilon_plus_flat (LRP): zennit has no rules for the attention and "
        "layer norms of VisionTransformer; use relevance: guided_backprop or gradient for a transformer"]
    config["neurons"]["ranking"]["relevance"] = "guided_backprop"
    assert ranking_problems(config, "v") == []


def test_a_transformer_is_rendered_at_its_own_input_size_from_smaller_token_references():
    """A token layer's references are a token with context (20 px of a 32 px input): VITAL renders at the 32 px the
    ViT insists on, not at the references' side, where the model would refuse the input."""
    from peekflow.data.folder import Preprocessing
    from peekflow.models.tokens import fixed_input_side
    from peekflow.neurons.vital import VitalSettings, vital_channels

    torch.manual_seed(0)
    vit = build_model("timm/vit_small_patch16_224", 3, img_size=32, patch_size=4, embed_dim=48, depth=2,
                      num_heads=2).eval()
    assert fixed_input_side(vit) == 32 and fixed_input_side(small_resnet()) is None
    assert fixed_input_side(build_model("vit_b_16", 3, image_size=32)) == 32
    refs = (np.random.default_rng(0).random((1, 2, 3, 20, 20)) * 255).astype(np.uint8)
    s = VitalSettings(steps=2, batch_size=1, references=2, relevance="gradient", match_layers={"blocks.0": 1.0})
    result = vital_channels(vit, "blocks.1", np.array([3]), refs, Preprocessing(mean=[0.5] * 3, std=[0.5] * 3), s)
    assert result.plain.shape == (1, 3, 32, 32) and result.references.shape == (1, 2, 3, 32, 32)

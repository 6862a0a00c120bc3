"""Token layers of vision transformers as maps of their patch tokens; the pooled feature is the head's own."""

import pytest
import torch

from peekflow.models.layers import pool, record_layers
from peekflow.models.registry import build_model
from peekflow.models.tokens import float_act, set_token_pool
from peekflow.neurons.receptive_field import receptive_field

SMALL = {"img_size": 32, "depth": 2}


def recorded(model, layers, size=32):
    with torch.no_grad(), record_layers(model.eval(), layers) as acts:
        model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    return acts


def test_class_token_is_the_pooled_feature_of_a_token_pooled_vit():
    model = build_model("timm/vit_small_patch16_224", 3, **SMALL)
    acts = recorded(model, ["norm", "fc_norm", "blocks.1"])
    assert acts["norm"].shape == (2, 384, 2, 2)  # 4 patch tokens, the class token dropped
    assert torch.allclose(pool(acts["norm"])[0], acts["fc_norm"])  # what the head sees
    tokens = model.forward_features(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(acts["norm"].flatten(2).transpose(1, 2), tokens[:, 1:])
    assert torch.allclose(pool(acts["norm"])[1], tokens[:, 1:].amax(1))
    set_token_pool(model, "mean")
    assert torch.allclose(pool(recorded(model, ["norm"])["norm"])[0], tokens[:, 1:].mean(1), atol=1e-6)


def test_mean_of_patch_tokens_for_an_avg_pooled_vit_and_register_tokens_dropped():
    model = build_model("timm/vit_small_patch16_224", 3, global_pool="avg", reg_tokens=4, **SMALL)
    acts = recorded(model, ["blocks.1"])
    tokens = model.forward_features(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert acts["blocks.1"].shape == (2, 384, 2, 2)
    assert torch.allclose(pool(acts["blocks.1"])[0], tokens[:, 5:].mean(1), atol=1e-6)


def test_torchvision_vit_and_swin_maps():
    vit = build_model("vit_b_16", 3, image_size=32)
    acts = recorded(vit, ["encoder.layers.encoder_layer_0", "conv_proj"])
    assert acts["encoder.layers.encoder_layer_0"].shape == (2, 768, 2, 2) and acts["conv_proj"].shape == (2, 768, 2, 2)
    swin = build_model("timm/swin_tiny_patch4_window7_224", 3, img_size=64, depths=(1, 1, 1, 1))
    assert recorded(swin, ["layers.3"], 64)["layers.3"].shape == (2, 768, 2, 2)  # channels-last [B,H,W,C] permuted
    tv_swin = recorded(build_model("swin_t", 3), ["features.5", "permute", "avgpool"], 64)  # the last two: NCHW
    assert [tuple(a.shape) for a in tv_swin.values()] == [(2, 384, 4, 4), (2, 768, 2, 2), (2, 768, 1, 1)]


def test_a_token_unit_is_credited_with_its_patch():
    rf = receptive_field(build_model("timm/deit_tiny_patch16_224", 3, **SMALL).eval(), "blocks.1", 32)
    assert (rf.size, rf.stride, rf.offset) == ((16, 16), (16, 16), (0, 0))


def test_token_pool_is_checked():
    with pytest.raises(ValueError, match="token_pool 'first' not in"):
        set_token_pool(torch.nn.Linear(1, 1), "first")


def test_the_pooled_token_survives_mixed_precision():
    model = build_model("timm/vit_small_patch16_224", 3, **SMALL).to(torch.bfloat16)
    with torch.no_grad(), record_layers(model.eval(), ["norm"]) as acts:
        model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16))
    half = acts["norm"]
    assert half.dtype == torch.bfloat16 and torch.equal(pool(float_act(half))[0], half.token_pooled.float())

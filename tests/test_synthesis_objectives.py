"""Objectives, image priors and DeepInversion's batch-norm loss: values against plain computations, gradients, and
that each one can be optimised (one shared helper, so each such test is two lines)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from peekflow.models.layers import record_layers
from peekflow.models.registry import build_model
from peekflow.synthesis import objectives as O
from peekflow.synthesis import regularisers as R
from peekflow.synthesis.bn_stats import bn_statistics, r_feature, record_bn_statistics
from peekflow.synthesis.objective import DEFAULT_MODEL, Activations
from synthesis_helpers import assert_loss_falls


def planted(layers=None, logits=None, batch=2, model=DEFAULT_MODEL) -> Activations:
    """Activations built by hand: `layers` maps a layer name (of `model`) or a (model, layer) pair to its output."""
    layers = {(k if isinstance(k, tuple) else (model, k)): v for k, v in (layers or {}).items()}
    return Activations(torch.zeros(batch, 3, 4, 4), {model: logits} if logits is not None else {}, layers)


def forward(obj, models: dict[str, nn.Module], images: torch.Tensor) -> torch.Tensor:
    """One step as a render loop takes it: hook the declared layers (and BN layers if needed), run every model."""
    with contextlib.ExitStack() as stack:
        hooked = {name: stack.enter_context(record_layers(m, sorted({l for mn, l in obj.layers if mn == name})))
                  for name, m in models.items()}
        bn = {name: stack.enter_context(record_bn_statistics(m)) for name, m in models.items()
              if "bn_stats" in obj.needs}
        logits = {name: m(images) for name, m in models.items()}
        layers = {(name, layer): out for name, outs in hooked.items() for layer, out in outs.items()}
        return obj(Activations(images, logits, layers, {"bn_stats": bn}))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("small_resnet", 3, widths=[4, 8, 8, 8]).eval()


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(1)
    return build_model("small_vgg", 3, widths=[4, 4, 4, 4]).eval()


# --- image priors ---------------------------------------------------------------------------------------------------
PRIORS = [R.tv_l1(), R.tv_l2(), R.l1_edge(), R.l2_pixel(), R.l2_pixel(centre=0.5), R.penalizer(2.0, 0.5, 3.0)]


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.description)
def test_prior_gradients_are_right(prior):
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda im: prior(Activations(im, {})), (x,))


def _loops(img: np.ndarray):
    """Per-image (tv_l1, tv_l2, l2_pixel) by explicit loops."""
    out = []
    for x in img:
        c, h, w = x.shape
        hor = [x[k, i, j + 1] - x[k, i, j] for k in range(c) for i in range(h) for j in range(w - 1)]
        ver = [x[k, i + 1, j] - x[k, i, j] for k in range(c) for i in range(h - 1) for j in range(w)]
        l1 = sum(abs(d) for d in hor) / len(hor) + sum(abs(d) for d in ver) / len(ver)
        l2 = sum(d * d for d in hor) / len(hor) + sum(d * d for d in ver) / len(ver)
        out.append((l1, l2, sum(v * v for v in x.flat) / x.size))
    return np.array(out)


def test_prior_values_match_plain_loops():
    img = np.random.default_rng(0).random((2, 3, 3, 4))
    acts = Activations(torch.from_numpy(img), {})
    want = _loops(img)
    np.testing.assert_allclose(R.tv_l1()(acts).numpy(), want[:, 0], rtol=1e-12)
    np.testing.assert_allclose(R.tv_l2()(acts).numpy(), want[:, 1], rtol=1e-12)
    np.testing.assert_allclose(R.l1_edge()(acts).numpy(), want[:, 0], rtol=1e-12)  # PEEK's formula = tv_l1's
    np.testing.assert_allclose(R.l2_pixel()(acts).numpy(), want[:, 2], rtol=1e-12)
    np.testing.assert_allclose(R.l2_pixel(0.5)(acts).numpy(), ((img - 0.5) ** 2).mean(axis=(1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(R.penalizer(2.0, 0.5, 3.0)(acts).numpy(), want @ [0.5, 2.0, 3.0], rtol=1e-12)


def test_penalizer_drops_zero_weights_and_rejects_negative_ones():
    assert R.penalizer().description == "tv_l2 + l1_edge + l2_pixel"
    assert R.penalizer(tv=0, l1_edge=0.5, l2_pixel=0).description == "0.5 * l1_edge"
    assert R.penalizer(0, 0, 0)(Activations(torch.rand(3, 3, 4, 4), {})).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="l2_pixel"):
        R.penalizer(l2_pixel=-1)


# --- objectives on activations --------------------------------------------------------------------------------------
def test_class_logit_and_cross_entropy_read_each_images_own_target():
    z = torch.randn(3, 5)
    acts = planted(logits=z, batch=3)
    targets = [4, 0, 2]
    by_hand = z.gather(1, torch.tensor(targets)[:, None])[:, 0]
    assert torch.equal(O.class_logit(targets)(acts), -by_hand)
    assert torch.equal(O.class_logit(torch.tensor(targets))(acts), -by_hand)
    assert torch.equal(O.class_logit(3)(acts), -z[:, 3])
    assert torch.allclose(O.cross_entropy(targets)(acts), F.cross_entropy(z, torch.tensor(targets), reduction="none"))
    assert O.class_logit(targets).description == "-logit([4,0,2])"
    with pytest.raises(ValueError, match="batch of 3"):
        O.class_logit([1, 2])(acts)
    with pytest.raises(ValueError, match="out of range"):
        O.class_logit(5)(acts)
    with pytest.raises(ValueError):
        O.class_logit([[1, 2]])


def test_channel_and_unit_read_the_planted_element():
    a = torch.zeros(2, 4, 3, 5)
    a[0, 1] = 2.0  # image 0, channel 1: mean 2
    a[1, 3, 1, 2] = 15.0  # image 1, channel 3: one unit at the centre (1, 2), mean 1
    a[1, 3, 0, 4] = 7.0  # ... and one in a corner
    acts = planted({"conv": a})
    assert O.channel("conv", [1, 3])(acts).tolist() == pytest.approx([-2.0, -(15.0 + 7.0) / 15])
    assert O.unit("conv", [1, 3])(acts).tolist() == [-2.0, -15.0]
    assert O.unit("conv", 3, y=0, x=4)(acts).tolist() == [0.0, -7.0]
    assert O.channel("fc", 2)(planted({"fc": torch.arange(8.0).view(2, 4)})).tolist() == [-2.0, -6.0]
    tokens = torch.arange(12.0).view(1, 3, 4)  # [B, T, C]: mean over the tokens
    assert O.channel("blocks", 1)(planted({"blocks": tokens}, batch=1)).tolist() == [-5.0]
    with pytest.raises(ValueError, match="outside"):
        O.unit("conv", 0, y=3, x=0)(acts)


def test_layer_activation_and_direction_values():
    a = torch.randn(2, 4, 3, 3)
    v = torch.randn(4)
    acts = planted({"conv": a})
    assert torch.allclose(O.layer_activation("conv")(acts), -(a**2).mean(dim=(1, 2, 3)))
    assert torch.allclose(O.direction("conv", v)(acts), -(a.mean(dim=(2, 3)) @ v))
    per_image = torch.randn(2, 4)
    assert torch.allclose(O.direction("conv", per_image)(acts), -(a.mean(dim=(2, 3)) * per_image).sum(1))


def test_caricature_is_lowest_for_the_amplified_target_direction():
    torch.manual_seed(0)
    target = torch.randn(1, 4, 3, 3)
    others = torch.randn(6, 4, 3, 3)
    responses = torch.cat([3.0 * target, others / others.flatten(1).norm(dim=1)[:, None, None, None]
                           * 3.0 * target.norm(), -3.0 * target])  # same norm; the last one anti-aligned
    for power in (0.0, 1.0, 2.5):
        loss = O.caricature("conv", target, amplify=2.0, cos_power=power)(planted({"conv": responses}, batch=8))
        assert loss.argmin() == 0 and loss[-1] > 0
    a, t = responses.flatten(1), 2.0 * target.flatten(1)
    cos = F.cosine_similarity(a, t, dim=1).clamp_min(0.1)
    want = -(a @ t[0]) * cos**1.5
    got = O.caricature("conv", target, amplify=2.0, cos_power=1.5)(planted({"conv": responses}, batch=8))
    assert torch.allclose(got, want)
    with pytest.raises(ValueError, match="does not fit"):
        O.caricature("conv", torch.randn(1, 4, 2, 2))(planted({"conv": responses}, batch=8))


def test_composites_union_layers_and_needs_and_read_each_model():
    obj = O.channel("x", 0, model="a") + 0.5 * O.channel("x", 0, model="b") - bn_statistics(model="a")
    assert obj.layers == {("a", "x"), ("b", "x")} and obj.needs == {"bn_stats"}
    acts = planted({("a", "x"): torch.full((2, 1, 2, 2), 1.0), ("b", "x"): torch.full((2, 1, 2, 2), 10.0)})
    assert (O.channel("x", 0, model="a") + 0.5 * O.channel("x", 0, model="b"))(acts).tolist() == [-6.0, -6.0]
    assert O.class_logit(1, model="probe").description == "-logit(1)@probe"


def test_custom_objective_declares_what_it_reads():
    obj = O.custom(lambda acts: acts("conv").flatten(1).sum(1), "sum(conv)", layers=["conv", ("probe", "fc")])
    assert obj.layers == {(DEFAULT_MODEL, "conv"), ("probe", "fc")}
    assert obj(planted({"conv": torch.ones(2, 3, 2, 2)})).tolist() == [12.0, 12.0]
    with pytest.raises(ValueError, match="one loss per image"):
        O.custom(lambda acts: acts.images.sum(), "scalar")(planted())


# --- DeepInversion's batch-norm statistics --------------------------------------------------------------------------
def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).double().eval()


def bn_loss(model, x, multiplier=10.0):
    return forward(bn_statistics(first_layer_multiplier=multiplier), {DEFAULT_MODEL: model}, x)


def test_recorded_statistics_are_the_bn_inputs_batch_mean_and_biased_variance():
    model, x = bn_net(), torch.rand(3, 3, 6, 6, dtype=torch.float64)
    with record_layers(model, ["0"]) as conv, record_bn_statistics(model) as stats:
        model(x)
    inp = conv["0"].detach().numpy()
    assert len(stats) == 2
    np.testing.assert_allclose(stats[0][0].detach().numpy(), inp.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(stats[0][1].detach().numpy(), inp.var(axis=(0, 2, 3)), rtol=1e-10)  # numpy's var: ddof=0
    assert stats[0][2] is model[1].running_mean and stats[1][3] is model[4].running_var


def test_bn_loss_is_zero_when_the_batch_has_the_running_statistics():
    model, x = bn_net(), torch.rand(4, 3, 6, 6, dtype=torch.float64)
    for conv, bn in (("0", model[1]), ("3", model[4])):  # in order: a BN's input depends on the BNs before it
        with record_layers(model, [conv]) as out, torch.no_grad():
            model(x)
        bn.running_mean.copy_(out[conv].mean(dim=(0, 2, 3)))
        bn.running_var.copy_(out[conv].var(dim=(0, 2, 3), unbiased=False))
    loss = bn_loss(model, x)
    assert loss.shape == (4,) and loss.abs().max() < 1e-6
    other = bn_loss(model, torch.rand(4, 3, 6, 6, dtype=torch.float64) ** 2)
    assert (other > 1e-3).all() and torch.allclose(other, other[0].expand(4))


def test_bn_loss_formula_and_first_layer_multiplier():
    stats = [(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]), torch.zeros(2), torch.tensor([1.0, -3.0])),
             (torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1.0]))]
    assert r_feature(stats, 10.0).item() == 10 * (3 + 4) + 1 and r_feature(stats, 1.0).item() == 8
    acts = Activations(torch.zeros(4, 3, 2, 2), {}, extras={"bn_stats": {DEFAULT_MODEL: stats}})
    assert bn_statistics()(acts).tolist() == [71 / 4] * 4  # split equally: sums to the batch's loss
    model, x = bn_net(), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with record_bn_statistics(model) as recorded:
        model(x)
    first = r_feature(recorded[:1], 1.0)
    assert torch.allclose(bn_loss(model, x, 10.0).sum() - bn_loss(model, x, 1.0).sum(), 9 * first)


def test_bn_hooks_are_removed_and_misuse_is_named():
    model = bn_net()
    with pytest.raises(RuntimeError, match="boom"), record_bn_statistics(model):
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="'1' is in train mode"), record_bn_statistics(model.train()):
        model(torch.rand(2, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(KeyError, match="'probe'"):
        bn_statistics(model="probe")(Activations(torch.zeros(1, 3, 2, 2), {}, extras={"bn_stats": {"model": []}}))
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        no_bn = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten())
        forward(bn_statistics(), {DEFAULT_MODEL: no_bn}, torch.rand(1, 3, 2, 2))


# --- every objective can be optimised -------------------------------------------------------------------------------
def test_class_logits_can_be_raised(net):
    assert_loss_falls(O.class_logit([0, 2]), net)


def test_cross_entropy_can_be_lowered(net):
    assert_loss_falls(O.cross_entropy(1), net)


def test_channel_and_unit_can_be_raised(net):
    assert_loss_falls(O.channel("layer2", [0, 3]) + O.unit("layer1", 1), net)


def test_layer_activation_and_direction_can_be_raised(net):
    assert_loss_falls(O.layer_activation("layer3") + O.direction("layer2", torch.linspace(-1, 1, 8)), net)


def test_caricature_can_be_optimised(net):
    with record_layers(net, ["layer2"]) as out, torch.no_grad():
        net(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)))
    assert_loss_falls(O.caricature("layer2", out["layer2"], amplify=2.0), net)


def test_image_priors_can_be_lowered(net):
    assert_loss_falls(R.penalizer(tv=1.0, l1_edge=1.0, l2_pixel=1.0) + R.tv_l1(), net)


def test_bn_statistics_can_be_lowered(net):
    assert_loss_falls(bn_statistics() + 0.1 * O.cross_entropy([0, 1]), net, lr=0.1)


def test_objectives_over_two_models_can_be_optimised(net, probe):
    assert_loss_falls(O.class_logit(0) + O.channel("block2", 1, model="probe"), {"model": net, "probe": probe}, size=32)


def test_competition_is_one_minus_scipy_jensen_shannon():
    from scipy.spatial.distance import jensenshannon

    torch.manual_seed(0)
    zt, zs = torch.randn(5, 7), torch.randn(5, 7)
    acts = Activations(torch.zeros(5, 3, 4, 4), {DEFAULT_MODEL: zt, "student": zs})
    got = O.competition("student")(acts)
    pt, ps = torch.softmax(zt, 1).numpy(), torch.softmax(zs, 1).numpy()
    want = [1 - jensenshannon(a, b) ** 2 for a, b in zip(pt, ps)]  # scipy gives the distance: sqrt of JS
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # agreement scores 1 (nothing to gain), and the divergence never exceeds log 2
    assert torch.allclose(O.competition("student")(Activations(acts.images, {DEFAULT_MODEL: zt, "student": zt})),
                          torch.ones(5), atol=1e-6)
    far = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    split = O.competition("student")(Activations(torch.zeros(2, 3, 4, 4), {DEFAULT_MODEL: far, "student": far.flip(1)}))
    np.testing.assert_allclose(split.numpy(), 1 - np.log(2), atol=1e-6)

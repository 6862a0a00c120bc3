"""The render loop, parameterisations and transforms of peekflow.synthesis.

The shared "the loss falls" check and the tiny network live in tests/synthesis_helpers.py.
"""

from __future__ import annotations

import logging
import sys
import types
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from peekflow.synthesis import transforms as T
from peekflow.synthesis.objective import DEFAULT_MODEL, objective
from peekflow.synthesis.param import fourier, pixel
from peekflow.synthesis.render import lr_factor, render
from synthesis_helpers import NORM, InputRecorder, assert_loss_falls, tiny_net

def class_logit(c: int, model: str = DEFAULT_MODEL):
    @objective(f"-logit({c})")
    def fn(acts):
        return -acts.logits_of(model)[:, c]
    return fn


def run(param=None, steps: int = 3, **kwargs):
    kwargs.setdefault("normalisation", NORM)
    return render(class_logit(0), kwargs.pop("models", tiny_net()), param or partial(pixel, 2, 16), steps=steps,
                  lr=kwargs.pop("lr", 0.05), **kwargs)


# --- render -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("param", [partial(pixel, 2, 16), partial(fourier, 2, 16)], ids=["pixel", "fourier"])
def test_same_seed_same_images_other_seed_other_images(param):
    a, b = run(param, seed=3, transforms=T.standard(16)), run(param, seed=3, transforms=T.standard(16))
    c = run(param, seed=4, transforms=T.standard(16))
    assert torch.equal(a.images, b.images) and a.history == b.history
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("param", [partial(pixel, 2, 16), partial(pixel, 2, 16, squash="clamp"),
                                   partial(fourier, 2, 16)], ids=["pixel", "pixel-clamp", "fourier"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_lr_zero_leaves_image_unchanged(param, optimizer):
    start = run(param, steps=0).images
    assert torch.equal(run(param, lr=0.0, optimizer=optimizer, weight_decay=0.1, transforms=T.standard(16)).images,
                       start)
    assert not torch.equal(run(param, lr=0.05, optimizer=optimizer).images, start)


def test_optimiser_settings_take_effect():
    base = run(steps=4)
    variants = {"lr": dict(lr=0.1), "betas": dict(betas=(0.5, 0.9)), "weight_decay": dict(weight_decay=0.5),
                "adamw": dict(optimizer="adamw", weight_decay=0.5), "cosine": dict(schedule="cosine"),
                "warmup": dict(warmup=3), "grad_clip": dict(grad_clip=1e-12)}
    for name, kw in variants.items():
        other = run(steps=4, **kw)
        assert not torch.allclose(other.images, base.images), name
        for k, v in kw.items():
            assert other.settings[k] == v, (name, k)
    assert run(steps=4, optimizer="adamw", weight_decay=0.5).settings["optimizer"] == "adamw"


def test_lr_schedule_warmup_then_cosine_to_zero():
    f = [lr_factor(s, 10, "cosine", warmup=2) for s in range(10)]
    assert f[:3] == [0.5, 1.0, 1.0] and all(a > b for a, b in zip(f[2:], f[3:])) and 0 < f[-1] < 0.05
    assert [lr_factor(s, 4, "constant", warmup=2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("param", [partial(pixel, 2, 16), partial(fourier, 2, 16)], ids=["pixel", "fourier"])
def test_class_logit_loss_falls(param):
    result = assert_loss_falls(class_logit(1), param=param)
    assert result.images.shape == (2, 3, 16, 16) and result.losses.shape == (2,) and len(result.history) == 8
    assert result.objective == "-logit(1)"


def test_layer_objective_with_transforms_and_hooks_removed():
    model = tiny_net()

    @objective("-mean(relu)", layers=[(DEFAULT_MODEL, "relu")])
    def relu_mean(acts):
        return -acts("relu").mean((1, 2, 3))

    assert_loss_falls(relu_mean, models=model, transforms=[T.jitter(1), T.flip()])
    assert all(not m._forward_hooks for m in model.modules())


def test_normalisation_is_applied_before_the_model():
    model = InputRecorder()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    run(partial(pixel, 2, 8, init="grey"), models=model, steps=1, lr=0.0, normalisation=(mean, std))
    expected = (0.5 - torch.tensor(mean)) / torch.tensor(std)
    for x in model.seen:
        assert torch.allclose(x, expected[None, :, None, None].expand_as(x), atol=1e-6)


def test_two_models_each_with_own_normalisation():
    a, b = InputRecorder(), InputRecorder()
    norms = {"a": ((0.5,) * 3, (0.5,) * 3), "b": ((0.0,) * 3, (2.0,) * 3)}

    @objective("-(logit_a(0) + logit_b(1))")
    def both(acts):
        return -(acts.logits_of("a")[:, 0] + acts.logits_of("b")[:, 1])

    render(both, {"a": a, "b": b}, partial(pixel, 1, 8, init="grey"), steps=2, lr=0.0, normalisation=norms)
    assert len(a.seen) == len(b.seen) == 3  # two steps + the final evaluation
    assert torch.allclose(a.seen[-1], torch.zeros(1)) and torch.allclose(b.seen[-1], torch.full((1,), 0.25))
    with pytest.raises(ValueError, match=r"no normalisation .* \['b'\]"):
        render(both, {"a": a, "b": b}, partial(pixel, 1, 8), steps=1, lr=0.1, normalisation={"a": norms["a"]})


def test_models_restored_and_untouched():
    model = tiny_net().train()
    model.fc.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run(models=model, transforms=T.standard(16))
    assert model.training and model.bn.training
    assert not model.fc.weight.requires_grad and model.conv.weight.requires_grad
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # eval: BN stats unchanged too


def test_clamp_param_stays_in_unit_range():
    result = run(partial(pixel, 2, 16, squash="clamp"), steps=5, lr=1.0)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.images == 0).any() or (result.images == 1).any()  # the step pushed past and was projected


def test_bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match=r"unknown optimizer 'sgd'; valid: \['adam', 'adamw'\]"):
        run(optimizer="sgd")
    with pytest.raises(ValueError, match=r"unknown schedule 'step'; valid: \['constant', 'cosine'\]"):
        run(schedule="step")
    with pytest.raises(ValueError, match=r"reads model\(s\) \['other'\]"):
        render(objective("x", layers=[("other", "conv")])(lambda a: a.images.sum((1, 2, 3))), tiny_net(),
               partial(pixel, 1, 8), steps=1, lr=0.1, normalisation=NORM)
    with pytest.raises(ValueError, match="normalisation must be"):
        run(normalisation=None)


def test_amp_on_cpu_falls_back_to_fp32(caplog):
    with caplog.at_level(logging.INFO, logger="peekflow"):
        result = run(amp=True, log_every=1)
    assert result.settings["precision"] == "fp32" and "running fp32" in caplog.text
    assert "step 3/3" in caplog.text


def test_bn_stats_are_recorded_per_model_when_needed(monkeypatch):
    """Wiring only, with a stand-in for bn_stats.record_bn_statistics: cleared before each forward, one entry per
    BatchNorm2d, reachable as acts.extras["bn_stats"][model]."""
    import contextlib

    @contextlib.contextmanager
    def record_bn_statistics(model):
        stats, handles = [], []
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                handles.append(m.register_forward_hook(
                    lambda mod, inp, out: stats.append((inp[0].mean((0, 2, 3)), mod.running_mean))))
        yield stats
        for h in handles:
            h.remove()

    monkeypatch.setitem(sys.modules, "peekflow.synthesis.bn_stats",
                        types.SimpleNamespace(record_bn_statistics=record_bn_statistics))
    seen = []

    @objective("bn", needs=["bn_stats"])
    def bn(acts):
        stats = acts.extras["bn_stats"][DEFAULT_MODEL]
        seen.append(len(stats))
        return sum(((m - rm) ** 2).sum() for m, rm in stats).expand(acts.images.shape[0])

    assert_loss_falls(bn, steps=4)
    assert seen == [1] * 5


def test_real_bn_statistics_objective_loss_falls():
    bn_stats = pytest.importorskip("peekflow.synthesis.bn_stats")
    assert_loss_falls(bn_stats.bn_statistics(), param=partial(pixel, 4, 16), steps=6, lr=0.1)


# --- parameterisations --------------------------------------------------------------------------------------------
def test_fourier_param_shape_range_and_gradient():
    params, image_fn = fourier(3, (16, 20), generator=torch.Generator().manual_seed(0))
    images = image_fn()
    assert images.shape == (3, 3, 16, 20) and images.min() >= 0 and images.max() <= 1
    images.mean().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def test_pixel_init_from_tensor_round_trips():
    init = torch.rand(3, 8, 8)
    for squash in ("sigmoid", "clamp"):
        _, image_fn = pixel(2, 8, init=init, squash=squash)
        assert torch.allclose(image_fn(), init.expand(2, 3, 8, 8), atol=1e-4)
    with pytest.raises(ValueError, match="unknown squash 'tanh'"):
        pixel(1, 8, squash="tanh")


# --- transforms ----------------------------------------------------------------------------------------------------
FACTORIES = {"jitter": T.jitter(3), "flip": T.flip(), "rotate_list": T.rotate([-20, 5, 30]), "rotate_max": T.rotate(15),
             "scale": T.scale([0.8, 1.2]), "pad_reflect": T.pad(3), "pad_constant": T.pad(3, "constant", 0.5),
             "standard": T.compose(T.standard(20))}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_transform_keeps_size_is_seeded_and_differentiable(name):
    t = FACTORIES[name]
    x = torch.rand(4, 3, 16, 20, requires_grad=True)
    a = t(x, torch.Generator().manual_seed(1))
    b = t(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None


def test_identity_settings_are_identity():
    x = torch.rand(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(T.jitter(0)(x, g), x) and torch.equal(T.flip(0.0)(x, g), x)
    assert torch.allclose(T.rotate([0])(x, g), x, atol=1e-5) and torch.allclose(T.scale([1.0])(x, g), x, atol=1e-5)
    assert torch.equal(T.flip(1.0)(x, g), x.flip(3))


def test_jitter_is_a_roll_within_d():
    x = torch.rand(6, 3, 12, 12)
    out = T.jitter(2)(x, torch.Generator().manual_seed(0))
    for i in range(6):
        assert any(torch.equal(out[i], x[i].roll((dy, dx), (1, 2))) for dy in range(-2, 3) for dx in range(-2, 3))


def test_factories_do_not_share_state_between_calls():
    x = torch.rand(4, 3, 16, 16)
    small, big, none = T.jitter(1), T.jitter(6), T.rotate([0])
    T.rotate([90])(x, torch.Generator().manual_seed(0))
    assert torch.allclose(none(x, torch.Generator().manual_seed(0)), x, atol=1e-5)
    assert not torch.equal(big(x, torch.Generator().manual_seed(0)), small(x, torch.Generator().manual_seed(0)))
    assert repr(small) == "jitter(1)" and repr(big) == "jitter(6)"
    assert T.standard(224)[0].description == "pad(12, constant=0.5)" and repr(T.standard(32)[1]) == "jitter(1)"


def test_merged_pixel_moves_equal_rolls_and_flips_with_the_same_draws():
    x = torch.rand(5, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    t = T.compose([T.jitter(3), T.flip(), T.jitter(1)])  # one gather for the three
    out = t(x, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same numbers in the same order, applied by roll and flip
    first, flips, last = torch.randint(-3, 4, (2, 5), generator=g), torch.rand(5, generator=g) < 0.5, \
        torch.randint(-1, 2, (2, 5), generator=g)
    ref = []
    for i in range(5):
        im = x[i].roll((int(first[0, i]), int(first[1, i])), (1, 2))
        im = im.flip(2) if flips[i] else im
        ref.append(im.roll((int(last[0, i]), int(last[1, i])), (1, 2)))
    ref = torch.stack(ref)
    assert torch.equal(out, ref)
    weights = torch.rand_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (want,) = torch.autograd.grad((ref * weights).sum(), x)
    assert torch.equal(grad, want)


def test_compose_equals_applying_its_transforms_one_by_one():
    x = torch.rand(4, 3, 16, 20)
    chain = [T.flip(), T.jitter(2), T.rotate(15), T.jitter(3), T.flip(0.7), T.pad(2)]
    out = T.compose(chain)(x, torch.Generator().manual_seed(2))
    g, want = torch.Generator().manual_seed(2), x
    for t in chain:
        want = t(want, g)
    assert torch.equal(out, want)


def test_colour_decorrelation_mixes_each_pixels_channels_by_the_normalised_matrix():
    from peekflow.synthesis.param import COLOR_CORRELATION_SQRT, decorrelate_colors

    t = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    m = COLOR_CORRELATION_SQRT.double().numpy()
    m = m / max(np.linalg.norm(m[:, j]) for j in range(3))  # largest column norm 1
    want = np.einsum("ij,bjhw->bihw", m, t.numpy())
    np.testing.assert_allclose(decorrelate_colors(t).numpy(), want, rtol=1e-6)


def test_fourier_image_is_the_scaled_spectrum_through_an_orthonormal_inverse_fft():
    from peekflow.synthesis.param import FOURIER_SCALE, decorrelate_colors

    h, w, decay = 6, 8, 1.0
    param = fourier(2, (h, w), decay=decay, std=0.5, generator=torch.Generator().manual_seed(0))
    spectrum = param.params[0].detach().double().numpy()
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    scale = 1 / np.maximum(f, 1 / max(h, w)) ** decay
    pixels = np.fft.irfft2(scale * (spectrum[..., 0] + 1j * spectrum[..., 1]), s=(h, w), norm="ortho") / FOURIER_SCALE
    want = torch.sigmoid(decorrelate_colors(torch.from_numpy(pixels))).numpy()
    np.testing.assert_allclose(param.image_fn().detach().numpy(), want, rtol=1e-5, atol=1e-6)


def test_colour_shift_scales_and_shifts_each_image_channel_within_bounds():
    from peekflow.synthesis.transforms import colour_shift

    images = torch.rand(6, 3, 8, 8, requires_grad=True)
    out = colour_shift(0.1, 0.2)(images, torch.Generator().manual_seed(3))
    # per (image, channel) an exact affine map: recover gain and offset from two pixels, check every other pixel
    x, y = images.detach().flatten(2), out.detach().flatten(2)
    gain = (y[..., 1] - y[..., 0]) / (x[..., 1] - x[..., 0])
    offset = y[..., 0] - gain * x[..., 0]
    torch.testing.assert_close(y, gain[..., None] * x + offset[..., None], rtol=1e-4, atol=1e-5)
    assert gain.log().abs().max() <= 0.2 + 1e-5 and offset.abs().max() <= 0.1 + 1e-6
    assert gain.std() > 0.01 and offset.std() > 0.01  # drawn per image and channel, not shared
    out.sum().backward()  # differentiable in the images
    torch.testing.assert_close(images.grad[:, :, 0, 0], gain)
    assert torch.equal(colour_shift(0, 0)(images, torch.Generator()), images)
    with pytest.raises(ValueError, match="shift >= 0"):
        colour_shift(-1, 0)

"""bn_gaussian, the no-image detector (peekflow.ood.bn_gaussian): the rectified-Gaussian moments against Monte Carlo,
the linear-discriminant inversion recovering planted class means and covariance, the moments wired to the right
batch norms through a chain of residual blocks, the score against a brute force, and the model path of
`peekflow score`, of the workflow and of the checks (an architecture it cannot derive is named before any job)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, write_folder
from peekflow.models.registry import build_model
from peekflow.ood.bn_gaussian import BNGaussian, lda_gaussians, penultimate_moments, rectified_moments


def test_rectified_moments_match_monte_carlo():
    rng = np.random.default_rng(0)
    mean, var = np.array([-1.5, 0.0, 0.7, 3.0]), np.array([0.5, 1.0, 2.0, 0.1])
    u = rng.normal(mean, np.sqrt(var), size=(2_000_000, 4))
    e, v = rectified_moments(mean, var)
    np.testing.assert_allclose(e, np.maximum(u, 0).mean(0), rtol=3e-3, atol=2e-4)
    np.testing.assert_allclose(v, np.maximum(u, 0).var(0), rtol=5e-3, atol=2e-4)


def test_lda_inversion_recovers_planted_means_and_covariance():
    rng = np.random.default_rng(1)
    k, dim = 5, 7
    d = rng.uniform(0.2, 2.0, dim)
    mu = rng.normal(0, 1, (k, dim)) + 3.0
    shared = rng.normal(0, 1, dim)  # softmax cannot see a vector added to every class's weights
    weight = mu / d + shared  # the linear discriminant's weights, w_k = D^-1 mu_k (+ shared)
    total_mean, total_var = mu.mean(0), d + mu.var(0)  # balanced classes: within + between
    means, cov = lda_gaussians(total_mean, total_var, weight)
    np.testing.assert_allclose(cov, d, rtol=1e-10)
    np.testing.assert_allclose(means, mu, rtol=1e-10)


def _bn(module):
    return module.bias.detach().double().numpy(), module.weight.detach().double().numpy() ** 2


def test_moments_follow_the_residual_chain():
    torch.manual_seed(0)
    small = build_model("small_resnet", 3, widths=[4, 8, 8, 8])  # layer4: one block with a downsample
    block = small.layer4[0] if isinstance(small.layer4, torch.nn.Sequential) else small.layer4
    for bn in (block.bn2, block.downsample[1]):
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    (b2, g2), (bd, gd) = _bn(block.bn2), _bn(block.downsample[1])
    np.testing.assert_allclose(penultimate_moments(small, "layer4"), rectified_moments(b2 + bd, g2 + gd))

    import torchvision

    net = torchvision.models.resnet18(num_classes=3)  # layer4: a downsampling block, then one adding its input
    for bn in (net.layer4[0].bn2, net.layer4[0].downsample[1], net.layer4[1].bn2):
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    first = rectified_moments(*(a + b for a, b in zip(_bn(net.layer4[0].bn2), _bn(net.layer4[0].downsample[1]))))
    (b2, g2) = _bn(net.layer4[1].bn2)
    np.testing.assert_allclose(penultimate_moments(net, "layer4"), rectified_moments(b2 + first[0], g2 + first[1]))


def test_architectures_it_cannot_derive_are_named():
    with pytest.raises(ValueError, match="'block4' block 0 \\(Conv2d\\) is not a residual block"):
        penultimate_moments(build_model("small_vgg", 3, widths=[4, 8, 8, 8]), "block4")
    import torchvision

    with pytest.raises(ValueError, match="'layer3' block 0 .*not a residual block|adds its input"):
        penultimate_moments(torchvision.models.resnet18(num_classes=3), "layer4.1")


def test_score_is_the_brute_force_diagonal_mahalanobis():
    from peekflow.features.last_layer import LastLayer
    from peekflow.features.store import FeatureSet

    rng = np.random.default_rng(2)
    det = BNGaussian()
    det.moments = (rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6))
    weight = rng.normal(0, 1, (4, 6))
    z = rng.normal(1, 1, (9, 6))
    data = FeatureSet("x", np.zeros((9, 4)), z, np.zeros(9, np.int64), [""] * 9,
                      last_layer=LastLayer(weight.astype(np.float32), np.zeros(4, np.float32), "fc", "layer4"))
    bare = FeatureSet("bare", np.zeros((9, 4)), z, np.zeros(9, np.int64), [""] * 9, source="/stores/bare.h5")
    with pytest.raises(ValueError, match="bn_gaussian: feature store /stores/bare.h5 records no last layer"):
        BNGaussian().fit_model(build_model("small_resnet", 3, widths=[4, 8, 8, 8]), "layer4").score(bare)
    got = det.score(data)
    means, var = lda_gaussians(*det.moments, weight.astype(np.float32))
    want = -np.min([((z - m) ** 2 / var).sum(1) for m in means], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_score_cli_needs_the_model_and_records_its_checkpoint(tmp_path, tiny_checkpoint, capsys):
    from peekflow.cli import main

    images = write_folder(tmp_path / "images", ["a", "b", "c"], per_class=3)
    store = tmp_path / "store.h5"
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL), "--images",
                 str(images), "--dataset-name", "val", "--settings", json.dumps({"layers": ["layer4"]}),
                 "--out", str(store)]) == 0
    base = ["score", "--method", "bn_gaussian", "--layer", "layer4", "--eval", f"val={store}"]
    assert main([*base, "--out", str(tmp_path / "s.h5")]) == 1
    assert "'bn_gaussian' derives its fit from the model: give --model and --checkpoint" in capsys.readouterr().err
    assert main([*base, "--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "s.h5")]) == 0
    with h5py.File(tmp_path / "s.h5") as h5:
        assert h5.attrs["checkpoint"] == str(tiny_checkpoint) and h5.attrs["fit_store"] == ""
        assert h5["val"].shape == (9,) and np.isfinite(h5["val"][:]).all()


def test_workflow_and_checks(tmp_path):
    from peekflow.workflow.preflight import model_fit_problems
    from workflow import snakemake, tiny_config, write_config

    config = tiny_config()
    config["ood"]["methods"] = {"msp": {}, "bn_gaussian": {}, "bn_fisher": {}}
    result = snakemake(tmp_path, "-n", "-p", "results/ood_table.csv", config=write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line for line in result.stdout.splitlines() if "peekflow score --method bn_" in line]
    assert len(commands) == 8  # per method the ID test set and three OOD sets, each reading the weights, no fit store
    assert all("--checkpoint results/models/tiny_resnet/model.pt" in c and "--fit-store" not in c for c in commands)
    config["target_models"] = ["tiny_resnet"]  # as the workflow expands it
    config["models"]["tiny_resnet"].update(arch="small_vgg", layers=["block4"], penultimate="block4")
    problems = model_fit_problems(config)
    assert [p.split(". OOD methods that work")[0] for p in problems] == [
        f"ood.methods.{method}: tiny_resnet (small_vgg): 'block4' block 0 (Conv2d) is not a residual block ending "
        "in batch norm + identity (torchvision / peekflow ResNets): the penultimate Gaussian cannot be derived from "
        "batch-norm statistics for this architecture" for method in ("bn_gaussian", "bn_fisher")]
    # the refusal names what works there instead, not the methods the user did not ask for
    assert "OOD methods that work on tiny_resnet: from its outputs alone ash_b" in problems[1]
    assert "msp" in problems[1] and "knn_deepdream" in problems[1] and "knn_deepinversion" in problems[1]
    assert "bn_gaussian" not in problems[1]

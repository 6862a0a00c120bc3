"""Emergence of intermediate visual patterns: the vMF normaliser, planted embeddings and importance weights, knowledge
points, the PGD trajectory, determinism and the two stages end to end."""

import json

import h5py
import numpy as np
import pytest
import torch

from peekflow.cli import main
from peekflow.data.folder import Preprocessing
from peekflow.emergence.importance import fit_importance
from peekflow.emergence.knowledge import knowledge_points
from peekflow.emergence.mixture import ClassMixture
from peekflow.emergence.regional import snap_orientation
from peekflow.emergence.sample import align_rotation, fit_sample_embedding, softmax_targets
from peekflow.emergence.trajectory import TrajectorySettings, pgd_steps
from peekflow.emergence.vmf import _log_iv_debye, log_normaliser, log_normaliser_t, mean_resultant_length
from peekflow.models.checkpoint import load_model

from conftest import TINY_MODEL, write_folder


def log_c3(kappa: np.ndarray) -> np.ndarray:
    """Closed form log(kappa / (4 pi sinh kappa)), evaluated stably: series below 1e-2, log-sinh form above."""
    small = kappa < 1e-2
    k = np.where(small, 1.0, kappa)
    log_sinh = k + np.log1p(-np.exp(-2 * k)) - np.log(2)
    series = np.log1p(kappa**2 / 6 + kappa**4 / 120)  # log(sinh k / k)
    return np.where(small, -np.log(4 * np.pi) - series, np.log(k) - np.log(4 * np.pi) - log_sinh)


def test_vmf_normaliser_matches_the_3d_closed_form():
    kappa = np.array([0.0, 1e-8, 1e-4, 9.99e-4, 1e-3, 0.05, 0.5, 1.0, 10.0, 100.0, 500.0, 5000.0])
    numeric = log_normaliser(kappa, 3)
    np.testing.assert_allclose(np.exp(numeric - log_c3(kappa)), 1.0, rtol=1e-6)  # C itself within 1e-6 relative
    assert np.exp(log_normaliser(500.0, 3)) == pytest.approx(500 / (4 * np.pi * np.sinh(500.0)), rel=1e-6)
    # the slope -d/dkappa log C_3 = coth(kappa) - 1/kappa (series kappa/3 - kappa^3/45 near 0)
    k = np.array([1e-4, 0.05, 1.0, 10.0, 500.0])
    closed = np.where(k < 1e-2, k / 3 - k**3 / 45, 1 / np.tanh(k) - 1 / k)
    np.testing.assert_allclose(mean_resultant_length(k, 3), closed, rtol=1e-6)


def test_vmf_normaliser_in_high_dimensions_and_its_gradient():
    # where scipy's scaled Bessel function underflows (nu large against kappa) the Debye expansion takes over; both
    # agree where both work
    for nu in (30.0, 120.0):
        x = np.array([1.0, 30.0, 300.0])
        from scipy.special import ive
        np.testing.assert_allclose(_log_iv_debye(nu, x), np.log(ive(nu, x)) + x, rtol=1e-9)
    values = log_normaliser(np.array([0.3, 5.0, 50.0, 700.0]), 1000)
    assert np.all(np.isfinite(values)) and np.all(np.diff(values) < 0)  # C_d falls with kappa
    assert 0 < mean_resultant_length(0.3, 1000) < mean_resultant_length(700.0, 1000) < 1
    kappa = torch.tensor([1e-5, 0.3, 2.0, 40.0], dtype=torch.float64, requires_grad=True)
    for dim in (3, 50):
        assert torch.autograd.gradcheck(lambda t: log_normaliser_t(t, dim), (kappa,))
    with pytest.raises(ValueError, match="kappa"):
        log_normaliser(-1.0, 3)


def planted_features(n_per_class=20, classes=6, channels=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centres = 3 * torch.randn(classes, channels, generator=g)
    features = torch.relu(centres[labels] + torch.randn(len(labels), channels, generator=g))
    logits = 8 * torch.nn.functional.one_hot(labels, classes).float() + torch.randn(len(labels), classes, generator=g)
    return features, softmax_targets(logits, 4.0), labels


def test_planted_separable_features_give_class_aligned_sample_embedding():
    features, probs, labels = planted_features()
    emb = fit_sample_embedding(features, probs, dims=3, steps=150, lr=0.1, seed=0)
    g = emb.embed(features)
    nearest = (torch.nn.functional.normalize(g, dim=1) @ emb.mixture.directions.T).argmax(1)
    assert (nearest == labels).float().mean() >= 0.95
    assert emb.history[-1] < 0.8 * emb.history[0]  # the KL falls during training ...
    assert emb.history[-1] <= min(emb.history[:10])  # ... and ends below its early values
    # a rotation onto another embedding changes neither norms nor probabilities
    rotation = align_rotation(g, torch.randn(g.shape, generator=torch.Generator().manual_seed(1)))
    turned = emb.rotated(rotation)
    torch.testing.assert_close(turned.embed(features).norm(dim=1), g.norm(dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(turned.mixture.log_posterior(turned.embed(features)), emb.mixture.log_posterior(g),
                               rtol=1e-4, atol=1e-4)


def test_orientation_snap_undoes_a_reflection_of_the_regional_map():
    features, probs, _ = planted_features()
    emb = fit_sample_embedding(features, probs, steps=30, lr=0.1)
    regional = features[:, :, None].repeat(1, 1, 4)  # every region shows its sample's feature
    mirror = torch.diag(torch.tensor([1.0, -1.0, 1.0]))
    weight = mirror @ emb.weight  # the regional map: the sample map, reflected
    weights = torch.full((len(features), 4), 0.25)
    g = torch.nn.functional.normalize(emb.embed(features), dim=1)

    def mean_cos():
        h = torch.nn.functional.normalize(torch.einsum("dk,nkr->nrd", weight, regional), dim=-1)
        return (h * g[:, None]).sum(-1).mean().item()

    assert mean_cos() < 0.9
    snap_orientation(weight, regional, 1.0, g, weights)
    assert mean_cos() == pytest.approx(1.0, abs=1e-5)


def planted_regions(n_per_class=10, classes=3, channels=8, regions=4, informative=2, seed=0):
    """Region `informative` shows a class pattern; the others the same noise for every class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    regional = torch.rand(len(labels), channels, regions, generator=g)
    patterns = torch.eye(channels)[:classes] * 3
    regional[:, :, informative] = patterns[labels] + 0.3 * torch.rand(len(labels), channels, generator=g)
    logits = 6 * torch.nn.functional.one_hot(labels, classes).float()
    return regional, softmax_targets(logits, 4.0), labels


def test_importance_weights_are_non_negative_l1_normalised_and_find_the_planted_region():
    regional, probs, _ = planted_regions()
    weights = fit_importance(regional, probs, steps=60, lr=0.1)
    for w in (weights.regions, weights.channels):
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(1), torch.ones(len(w)), rtol=0, atol=1e-5)
    assert (weights.regions.argmax(1) == 2).float().mean() >= 0.9
    assert weights.history[-1] < weights.history[0]
    n, _, r = regional.shape
    assert weights.alignment.shape == (n, n, r) and int(weights.alignment.max()) < r


def test_knowledge_points_are_regions_over_the_threshold():
    mixture = ClassMixture(torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.5, 0.0]]), torch.tensor([0.5, 0.5]))
    emb = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.1, 0.1, 0.0], [0.0, 0.0, 3.0]]])  # [1, R=4, 3]
    # independent: q(y|h) from the closed-form C_3 in numpy
    h = emb[0].double().numpy()
    kappa = np.linalg.norm(h, axis=1)[:, None] * np.array([0.9, 0.5])[None]
    logits = np.log(0.5) + log_c3(kappa) + h @ mixture.means.double().numpy().T
    q = np.exp(logits - logits.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    for threshold in (0.4, 0.6, 0.9):
        points = knowledge_points(emb, mixture, threshold)
        np.testing.assert_allclose(points.probability[0].numpy(), q.max(1), rtol=1e-5)
        np.testing.assert_array_equal(points.mask[0].numpy(), q.max(1) >= threshold)
        np.testing.assert_array_equal(points.classes[0].numpy(), q.argmax(1))
    weights = torch.tensor([[0.05, 0.45, 0.45, 0.05]])  # min_weight 1: weight >= 1/4 needed
    strict = knowledge_points(emb, mixture, 0.4, weights, min_weight=1.0)
    np.testing.assert_array_equal(strict.mask[0].numpy(), (q.max(1) >= 0.4) & (weights[0].numpy() >= 0.25))
    assert strict.count_of(torch.tensor([1])) == int(((q.argmax(1) == 1) & strict.mask[0].numpy()).sum())


def test_pgd_raises_the_loss_in_the_configured_steps_and_stays_in_the_ball(tiny_checkpoint):
    model, _ = load_model(tiny_checkpoint, "small_resnet", 3)
    prep = Preprocessing(**TINY_MODEL["preprocessing"])
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    s = TrajectorySettings(eps=0.02, steps=4, alpha=0.006)
    frames = pgd_steps(model, images, labels, prep, s, torch.device("cpu"))
    assert len(frames) == s.steps + 1
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)

    def ce(x):
        return torch.nn.functional.cross_entropy(model((x - mean) / std), labels, reduction="none")

    with torch.no_grad():
        losses = [ce(x) for x in frames]
    assert (losses[-1] > losses[0]).all()
    for x in frames:
        assert (x - images).abs().max() <= s.eps + 1e-6 and x.min() >= 0 and x.max() <= 1
    # one step is x0 + alpha sign(grad), projected (independent autograd computation)
    x0 = images.clone().requires_grad_(True)
    ce(x0).sum().backward()
    expected = torch.minimum(torch.maximum(images + s.alpha * x0.grad.sign(), (images - s.eps).clamp(0, 1)),
                             (images + s.eps).clamp(0, 1))
    torch.testing.assert_close(frames[1], expected, rtol=0, atol=1e-6)


@pytest.fixture
def emergence_store(tmp_path, tiny_checkpoint):
    images = write_folder(tmp_path / "images", ["a", "b", "c"], per_class=6)
    out = tmp_path / "maps.h5"
    settings = {"layers": ["layer3", "layer4"], "maps": ["layer3", "layer4"], "batch_size": 8}
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL), "--images",
                 str(images), "--dataset-name", "tiny", "--settings", json.dumps(settings), "--device", "cpu", "--out", str(out)]) == 0
    return out


SMALL = {"per_class": 4, "grid": 2, "sample_steps": 20, "importance_steps": 10, "regional_steps": 10,
         "seed": 3}


def run_emergence(store, out_dir, **extra):
    return main(["emergence", "--store", str(store), "--layers", "layer3", "layer4", "--settings",
                 json.dumps({**SMALL, **extra}), "--device", "cpu", "--out-dir", str(out_dir)])


def test_emergence_stages_end_to_end_and_deterministic(tmp_path, emergence_store, tiny_checkpoint, monkeypatch):
    from peekflow.emergence import plots

    titles = []
    for name in ("plot_layer", "plot_counts"):
        draw = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, draw=draw, **k: (titles.append(k["title"]), draw(*a, **k)))
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_emergence(emergence_store, first) == 0 and run_emergence(emergence_store, second) == 0
    for layer in ("layer3", "layer4"):
        with h5py.File(first / f"{layer}.h5") as a, h5py.File(second / f"{layer}.h5") as b:
            assert a.attrs["complete"] and json.loads(a.attrs["settings"])["per_class"] == 4
            assert a["regional_embedding"].shape == (12, 4, 3) and a["sample_embedding"].shape == (12, 3)
            w = a["region_weights"][:]
            assert (w >= 0).all() and np.allclose(w.sum(1), 1, atol=1e-5)
            for name in ("rows", "sample_embedding", "region_weights", "channel_weights", "regional_embedding",
                         "knowledge_points", "class_means"):
                np.testing.assert_array_equal(a[name][:], b[name][:])
        assert (first / f"{layer}.png").stat().st_size > 0
    counts = json.loads((first / "knowledge_points.json").read_text())
    assert [r["layer"] for r in counts["layers"]] == ["layer3", "layer4"] and counts["images"] == 12
    assert (first / "knowledge_points.csv").read_text().splitlines()[0].startswith("layer,regions,knowledge_points")
    assert (first / "knowledge_points.png").stat().st_size > 0
    assert titles[:3] == ["tiny: emergence at layer3", "tiny: emergence at layer4",
                          "tiny: emergence, knowledge points per layer (12 images)"]  # the store's model named
    # another seed draws another embedding
    assert run_emergence(emergence_store, tmp_path / "other", seed=4) == 0
    with h5py.File(first / "layer4.h5") as a, h5py.File(tmp_path / "other" / "layer4.h5") as b:
        assert not np.array_equal(a["sample_embedding"][:], b["sample_embedding"][:])

    files = [str(first / f"{layer}.h5") for layer in ("layer3", "layer4")]
    settings = json.dumps({"images": 2, "steps": 3, "eps": 0.05, "alpha": 0.02})
    assert main(["emergence-trajectory", "--model", json.dumps(TINY_MODEL), "--checkpoint", str(tiny_checkpoint),
                 "--analysis", *files, "--settings", settings, "--device", "cpu", "--out", str(tmp_path / "trajectory.h5"),
                 "--figure", str(tmp_path / "trajectory.png")]) == 0
    with h5py.File(tmp_path / "trajectory.h5") as h5:
        assert h5["sample"].shape == (2, 4, 2, 3) and h5["regions"].shape == (2, 4, 2, 4, 3)
        assert h5["true_prob"].shape == (4, 2) and len(set(h5["labels"][:])) == 2  # distinct classes
        assert (h5["true_prob"][-1] <= h5["true_prob"][0] + 1e-6).all()
    assert (tmp_path / "trajectory.png").stat().st_size > 0


def test_missing_maps_fail_naming_the_store_and_layer(tmp_path, emergence_store, capsys):
    code = main(["emergence", "--store", str(emergence_store), "--layers", "layer2", "--settings",
                 json.dumps(SMALL), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "layer2" in err and str(emergence_store) in err and "maps" in err


@pytest.mark.parametrize("dims", [2, 4])
def test_layer_figure_draws_other_dimensions_in_3d(tmp_path, dims):
    from peekflow.emergence.plots import plot_layer

    rng = np.random.default_rng(0)
    plot_layer(tmp_path / "layer.png", "layerX", rng.normal(size=(12, dims)), np.arange(12) % 3,
               rng.normal(size=(3, dims)), rng.normal(size=(12, 4, dims)), rng.random((12, 4)) > 0.5,
               rng.integers(0, 3, (12, 4)), ["a", "b", "c"])
    assert (tmp_path / "layer.png").stat().st_size > 0


def test_the_maps_store_holds_only_the_analysed_subsample(tmp_path, emergence_store, tiny_checkpoint):
    """`extract --per-class 4 --sample-seed 3` stores the 12 images the analysis (per_class 4, seed 3) reads from the
    whole store, with the same maps, and the analysis of either store gives the same result."""
    sub = tmp_path / "sub.h5"
    settings = {"layers": ["layer3", "layer4"], "maps": ["layer3", "layer4"], "batch_size": 8}
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL), "--images",
                 str(tmp_path / "images"), "--dataset-name", "tiny", "--settings", json.dumps(settings), "--device",
                 "cpu", "--per-class", "4", "--sample-seed", "3", "--out", str(sub)]) == 0
    with h5py.File(emergence_store) as full, h5py.File(sub) as part:
        assert len(full["paths"]) == 18 and len(part["paths"]) == 12
        assert json.loads(part.attrs["subsample"]) == {"per_class": 4, "seed": 3, "of": 18}
        rows = [list(full["paths"][:]).index(p) for p in part["paths"][:]]
        assert rows == sorted(rows) and sorted(np.bincount(part["labels"][:])) == [4, 4, 4]
        for layer in ("layer3", "layer4"):
            np.testing.assert_allclose(part[f"maps/{layer}"][:], full[f"maps/{layer}"][rows], rtol=1e-3, atol=1e-4)
    assert run_emergence(emergence_store, tmp_path / "a") == 0 and run_emergence(sub, tmp_path / "b") == 0
    with h5py.File(tmp_path / "a" / "layer4.h5") as a, h5py.File(tmp_path / "b" / "layer4.h5") as b:
        assert list(a["paths"][:]) == list(b["paths"][:])
        np.testing.assert_allclose(a["sample_embedding"][:], b["sample_embedding"][:], atol=1e-3)


def test_regional_fit_keeps_one_blocks_graph_at_a_time(monkeypatch):
    """Peak memory of the tensors autograd saves does not grow with the number of row blocks: 24 one-row blocks
    keep a fraction of one 24-row block's, and the fitted map is the same."""
    from peekflow.emergence import similarity
    from peekflow.emergence.regional import fit_regional_embedding

    g = torch.Generator().manual_seed(0)
    n, c, r, d = 24, 6, 4, 3
    regional, probs = torch.rand(n, c, r, generator=g), torch.softmax(torch.randn(n, 3, generator=g), 1)
    sample, weights = torch.randn(n, d, generator=g), torch.softmax(torch.randn(n, r, generator=g), 1)
    alignment = torch.randint(0, r, (n, n, r), generator=g)

    def fit(rows_per_block):
        monkeypatch.setattr(similarity, "BLOCK_ELEMENTS", rows_per_block * n * r * d)
        live, peak = [0], [0]

        class Saved:
            def __init__(self, t):
                self.t, self.bytes = t, t.numel() * t.element_size()
                live[0] += self.bytes
                peak[0] = max(peak[0], live[0])

            def __del__(self):
                live[0] -= self.bytes

        with torch.autograd.graph.saved_tensors_hooks(Saved, lambda s: s.t):
            fitted = fit_regional_embedding(regional, probs, sample, weights, alignment, steps=6, seed=1)
        return fitted, peak[0]

    whole, whole_peak = fit(n)
    split, split_peak = fit(1)
    assert split_peak < 0.3 * whole_peak, (split_peak, whole_peak)
    torch.testing.assert_close(split.weight, whole.weight, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split.history, whole.history, rtol=1e-5)


def test_a_run_without_knowledge_points_says_so_in_words(tmp_path):
    from figure_helpers import clipped_texts, texts
    from peekflow.emergence.plots import plot_counts

    rows = [{"layer": f"layer{i}", "knowledge_points": 0, "toward_label": 0, "regions": 512} for i in range(1, 5)]
    fig = plot_counts(tmp_path / "none.png", rows, title="tiny_resnet: knowledge points per layer (64 images)")
    assert any(t.startswith("no knowledge points") and "512 regions" in t for t in texts(fig))
    ax = fig.axes[0]
    assert not ax.lines and ax.get_ylim() == (0, 1)  # no flat line on an axis of +-0.04
    assert clipped_texts(fig) == [] and (tmp_path / "none.png").is_file()
    rows[2]["knowledge_points"] = 7
    fig = plot_counts(tmp_path / "some.png", rows)
    assert not any(t.startswith("no knowledge points") for t in texts(fig)) and len(fig.axes[0].lines) == 2

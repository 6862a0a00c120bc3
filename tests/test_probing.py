import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from peekflow.probing import ProbeSettings, evaluate, probe

CLASSES = ["a", "b", "c", "d", "e"]


def planted(seed=0, n_known=40, per_unit=3, noise=0.3):
    """Known images around 5 class centres; the prototypes of unit u sit near the centre of class perm[u]."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 16)) * 2
    labels = np.repeat(np.arange(5), n_known // 5)
    known = centres[labels] + noise * rng.normal(size=(len(labels), 16))
    perm = np.array([3, 0, 4, 1, 2])
    units = np.repeat(np.arange(5), per_unit)
    protos = centres[perm[units]] + noise * rng.normal(size=(len(units), 16))
    return protos, units, known, labels, perm


def test_planted_permutation_is_recovered():
    protos, units, known, labels, perm = planted()
    for settings in (ProbeSettings(), ProbeSettings(center=False, standardise="none"), ProbeSettings(match="votes", k=3)):
        result = probe(protos, units, known, labels, 5, settings)
        assert result.best.tolist() == perm.tolist() and result.hungarian.tolist() == perm.tolist()
        report = evaluate(result, [CLASSES[p] for p in perm], CLASSES)
        assert report["accuracy"] == report["hungarian_accuracy"] == 1.0
        assert report["units"][1] == {"true_class": "a", "best_match": "a", "hungarian_match": "a",
                                      "similarity": pytest.approx(result.similarity[1, 0], abs=1e-6),
                                      "matching_score": pytest.approx(result.matching[1, 0], abs=1e-6)}


def test_similarity_is_the_mean_pairwise_cosine():
    protos, units, known, labels, _ = planted(seed=1, noise=1.0)
    for center in (False, True):
        result = probe(protos, units, known, labels, 5, ProbeSettings(center=center))
        shift = known.mean(0) if center else 0
        for u in range(5):
            for c in range(5):
                pairs = [np.dot(p - shift, q - shift) / np.linalg.norm(p - shift) / np.linalg.norm(q - shift)
                         for p in protos[units == u] for q in known[labels == c]]
                assert result.similarity[u, c] == pytest.approx(np.mean(pairs), abs=1e-10)


def test_votes_equal_sklearn_cosine_neighbours():
    protos, units, known, labels, _ = planted(seed=2, noise=2.0)
    k = 7
    result = probe(protos, units, known, labels, 5, ProbeSettings(center=False, k=k))
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(known)
    neighbours = nn.kneighbors(protos, return_distance=False)
    for u in range(5):
        counts = np.bincount(labels[neighbours[units == u]].ravel(), minlength=5)
        np.testing.assert_allclose(result.votes[u], counts / counts.sum())


def test_hungarian_resolves_a_collision():
    # two units both prefer class 0; unit 1 a little less, and its second choice (class 1) is free
    known = np.eye(3)
    labels = np.arange(3)
    protos = np.array([[1.0, 0.0, 0.0], [1.0, 0.9, 0.0], [0.0, 0.0, 1.0]])
    result = probe(protos, np.arange(3), known, labels, 3, ProbeSettings(center=False, k=1, standardise="none"))
    assert result.best.tolist() == [0, 0, 2] and result.hungarian.tolist() == [0, 1, 2]
    report = evaluate(result, ["x", "y", "z"], ["x", "y", "z"])
    assert report["accuracy"] == pytest.approx(2 / 3) and report["hungarian_accuracy"] == 1.0


def test_class_standardisation_discounts_a_hub():
    # known class 0 is a hub: every unit's prototypes lean towards it; unit u is distinctively close to class u
    known, labels = np.eye(4), np.arange(4)
    protos = np.array([[1.0, 0, 0, 0], [1.0, 0.8, 0, 0], [1.0, 0, 0.8, 0], [1.0, 0, 0, 0.8]])
    raw = probe(protos, np.arange(4), known, labels, 4, ProbeSettings(center=False, standardise="none"))
    assert raw.best.tolist() == [0, 0, 0, 0]
    hub = probe(protos, np.arange(4), known, labels, 4, ProbeSettings(center=False))
    assert hub.best.tolist() == [0, 1, 2, 3]
    m = raw.similarity
    np.testing.assert_allclose(hub.matching, (m - m.mean(0)) / m.std(0))
    np.testing.assert_array_equal(hub.similarity, raw.similarity)  # the CSV's raw S is untouched


def test_bad_inputs_are_named():
    protos, units, known, labels, _ = planted()
    with pytest.raises(ValueError, match="known classes \\[4\\] have no image"):
        probe(protos, units, known[labels < 4], labels[labels < 4], 5)
    with pytest.raises(ValueError, match="same probe layer"):
        probe(protos[:, :8], units, known, labels, 5)
    with pytest.raises(ValueError, match="all labels are -1"):
        probe(protos, units, known, -np.ones_like(labels), 5)
    result = probe(protos, units, known, labels, 5)
    with pytest.raises(ValueError, match="lacks the true classes \\['zebra'\\]"):
        evaluate(result, ["a", "b", "c", "d", "zebra"], CLASSES)


def test_similarity_figure_title_names_model_and_method_and_is_not_clipped(tmp_path):
    from figure_helpers import clipped_texts, texts
    from peekflow.probing import plot_similarity

    protos, units, known, labels, perm = planted()
    result = probe(protos, units, known, labels, 5, ProbeSettings())
    title = ("its_vit deepdream prototypes by probe resnet18_probe.layer4: accuracy 100%, Hungarian 100% (a title "
             "longer than this narrow figure)")
    fig = plot_similarity(tmp_path / "s.png", result, CLASSES, [CLASSES[p] for p in perm], title=title)
    assert (tmp_path / "s.png").is_file() and clipped_texts(fig) == []
    assert " ".join(" ".join(texts(fig)).split()).count(title) == 1  # whole, wrapped onto lines

"""peekflow.ood.metrics: hand-worked cases (with ties), limits, an independent brute-force implementation, and the
bootstrap (against `ood_metrics` on explicit resamples, seeding, coverage of the point estimate, 1/sqrt(n) width)."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from peekflow.ood.metrics import bootstrap_metrics, ood_metrics, percentile_ci, resampled_metrics


def brute_force(s_id, s_ood):
    """Definitions evaluated directly: pairwise AUROC, threshold sweeps over every distinct score."""
    s_id, s_ood = np.asarray(s_id, float), np.asarray(s_ood, float)
    wins = sum(float(a > b) + 0.5 * float(a == b) for a in s_id for b in s_ood)
    auroc = 100 * wins / (len(s_id) * len(s_ood))
    values = np.unique(np.concatenate([s_id, s_ood]))
    # classic: highest threshold t (accept s >= t) keeping >= 95% of ID; OOD accepted there
    fpr95 = next(100 * np.mean(s_ood >= t) for t in values[::-1] if np.mean(s_id >= t) >= 0.95)
    # OpenOOD: OOD positive when s <= t; lowest such t reaching >= 95% OOD recall; ID called OOD there
    openood = next(100 * np.mean(s_id <= t) for t in values if np.mean(s_ood <= t) >= 0.95)
    return auroc, fpr95, openood


def test_hand_computed_with_ties():
    s_id, s_ood = [3, 2, 2, 1], [2, 1, 0]
    m = ood_metrics(s_id, s_ood)
    # AUROC over 12 pairs: id 3 beats all 3 -> 3; each id 2: tie 2 (0.5) + beats 1, 0 -> 2.5, twice -> 5;
    # id 1: loses to 2, ties 1 (0.5), beats 0 -> 1.5.  (3 + 5 + 1.5) / 12 = 9.5 / 12.
    assert m["auroc"] == pytest.approx(100 * 9.5 / 12)
    # fpr95: keeping >= 95% of 4 ID scores means all 4 -> threshold 1; OOD >= 1 is {2, 1}: 2/3.
    assert m["fpr95"] == pytest.approx(100 * 2 / 3)
    # fpr95_openood: >= 95% of 3 OOD recalled means all 3 -> call OOD when s <= 2; ID with s <= 2 is {2, 2, 1}: 3/4.
    assert m["fpr95_openood"] == pytest.approx(75.0)
    # aupr_in (ID positive, thresholds 3, 2, 1, 0): (P, R) = (1, 1/4), (3/4, 3/4), (4/6, 1), (4/7, 1)
    #   AP = 1/4 * 1 + 1/2 * 3/4 + 1/4 * 2/3 = 19/24
    assert m["aupr_in"] == pytest.approx(100 * 19 / 24)
    # aupr_out (OOD positive on -s; -s thresholds 0, -1, -2, -3): (P, R) = (1, 1/3), (2/3, 2/3), (1/2, 1), (3/7, 1)
    #   AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 1/2 = 13/18
    assert m["aupr_out"] == pytest.approx(100 * 13 / 18)
    assert (m["n_id"], m["n_ood"]) == (4, 3)


def test_fpr95_at_exactly_95_percent():
    # 20 ID scores 1..20: 19/20 = 95% are kept at threshold 2 -> OOD accepted = #{ood >= 2} / 4 = 2/4.
    # OOD scores 0, 1, 5, 30: 95% recall of 4 OOD needs all 4 -> call OOD when s <= 30 -> every ID is rejected.
    m = ood_metrics(np.arange(1, 21), [0, 1, 5, 30])
    assert m["fpr95"] == pytest.approx(50.0)
    assert m["fpr95_openood"] == pytest.approx(100.0)


def test_all_tied():
    m = ood_metrics([1.0, 1.0], [1.0, 1.0, 1.0])
    assert m["auroc"] == pytest.approx(50.0)
    assert m["fpr95"] == pytest.approx(100.0)
    assert m["fpr95_openood"] == pytest.approx(100.0)


def test_perfect_and_reversed():
    rng = np.random.default_rng(0)
    s_id, s_ood = rng.uniform(1, 2, 50), rng.uniform(-1, 0, 40)
    good = ood_metrics(s_id, s_ood)
    assert good["auroc"] == 100 and good["fpr95"] == 0 and good["fpr95_openood"] == 0
    assert good["aupr_in"] == 100 and good["aupr_out"] == 100
    bad = ood_metrics(s_ood, s_id)
    assert bad["auroc"] == 0 and bad["fpr95"] == 100 and bad["fpr95_openood"] == 100


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(1, 60, size=2)
    # rounded scores -> many ties, within and across the two sides
    s_id = np.round(rng.normal(0.5, 1, n_id), 1)
    s_ood = np.round(rng.normal(0, 1, n_ood), 1)
    m = ood_metrics(s_id, s_ood)
    auroc, fpr95, openood = brute_force(s_id, s_ood)
    assert m["auroc"] == pytest.approx(auroc)
    assert m["fpr95"] == pytest.approx(fpr95)
    assert m["fpr95_openood"] == pytest.approx(openood)
    y = np.r_[np.ones(n_id), np.zeros(n_ood)]
    s = np.r_[s_id, s_ood]
    assert m["aupr_in"] == pytest.approx(100 * average_precision_score(y, s))
    assert m["aupr_out"] == pytest.approx(100 * average_precision_score(1 - y, -s))
    assert all(0 <= m[k] <= 100 for k in ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"))


@pytest.mark.parametrize(
    "s_id, s_ood, message",
    [
        ([], [1.0], "ID scores are empty"),
        ([1.0], [], "OOD scores are empty"),
        ([1.0, np.nan], [0.0], "ID scores contain 1 non-finite"),
        ([1.0], [0.0, np.inf, -np.inf], "OOD scores contain 2 non-finite"),
        ([[1.0]], [0.0], "ID scores must be a 1-D array"),
    ],
)
def test_rejects_bad_input(s_id, s_ood, message):
    with pytest.raises(ValueError, match=message):
        ood_metrics(s_id, s_ood)


# --- bootstrap confidence intervals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_resampled_metrics_equal_ood_metrics_on_each_resample(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(1, 50, size=2)
    s_id, s_ood = np.round(rng.normal(0.5, 1, n_id), 1), np.round(rng.normal(0, 1, n_ood), 1)  # many ties
    id_idx, ood_idx = rng.integers(0, n_id, (4, n_id)), rng.integers(0, n_ood, (4, n_ood))
    fast = resampled_metrics(s_id, s_ood, id_idx, ood_idx)
    for r in range(4):
        ref = ood_metrics(s_id[id_idx[r]], s_ood[ood_idx[r]])
        assert fast["auroc"][r] == pytest.approx(ref["auroc"]) and fast["fpr95"][r] == pytest.approx(ref["fpr95"])


def test_bootstrap_equals_a_plain_loop_over_its_seeded_resamples():
    """The documented seeding: ID rows from default_rng([seed, 0]), OOD rows from default_rng([seed, 1, stream])."""
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(1, 1, 40), np.round(rng.normal(0, 1, 30), 1)
    got = bootstrap_metrics(s_id, s_ood, n_bootstrap=6, seed=7, stream=2)
    id_rng, ood_rng = np.random.default_rng([7, 0]), np.random.default_rng([7, 1, 2])
    for r in range(6):
        ref = ood_metrics(s_id[id_rng.integers(0, 40, 40)], s_ood[ood_rng.integers(0, 30, 30)])
        assert got["auroc"][r] == pytest.approx(ref["auroc"]) and got["fpr95"][r] == pytest.approx(ref["fpr95"])


def test_bootstrap_is_seeded_and_chunking_does_not_change_it(monkeypatch):
    rng = np.random.default_rng(0)
    s_id, s_ood = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    first = bootstrap_metrics(s_id, s_ood, 50, seed=1)
    assert all(np.array_equal(first[k], bootstrap_metrics(s_id, s_ood, 50, seed=1)[k]) for k in first)
    assert not np.array_equal(first["auroc"], bootstrap_metrics(s_id, s_ood, 50, seed=2)["auroc"])
    monkeypatch.setattr("peekflow.ood.metrics._CHUNK_ELEMENTS", 700)  # 2 resamples per chunk instead of all 50
    assert all(np.array_equal(first[k], bootstrap_metrics(s_id, s_ood, 50, seed=1)[k]) for k in first)
    # the ID resamples depend on (seed, n_id) only: another OOD stream keeps them (same AUROC against a constant)
    const = np.zeros(5)
    a, b = (bootstrap_metrics(s_id, const, 20, seed=1, stream=s) for s in (0, 3))
    assert np.array_equal(a["fpr95"], b["fpr95"])


def test_ci_contains_the_point_estimate_and_narrows_like_one_over_sqrt_n():
    """Planted case: ID ~ N(1, 1), OOD ~ N(0, 1); true AUROC = Phi(1 / sqrt 2) = 76.02%."""
    widths = {}
    for n in (1000, 16000):
        rng = np.random.default_rng(n)
        s_id, s_ood = rng.normal(1, 1, n), rng.normal(0, 1, n)
        point = ood_metrics(s_id, s_ood)
        boot = bootstrap_metrics(s_id, s_ood, 400, seed=0)
        for key in ("auroc", "fpr95"):
            lo, hi = percentile_ci(boot[key])
            assert lo < point[key] < hi, key
            widths[key, n] = hi - lo
        lo, hi = percentile_ci(boot["auroc"])
        assert lo - 1 < 76.02 < hi + 1
    assert widths["auroc", 1000] / widths["auroc", 16000] == pytest.approx(4.0, rel=0.2)  # sqrt(16000 / 1000)
    # fpr95 hinges on one ID quantile: its bootstrap width is noisier (2.4-4 over seeds in a trial), still shrinking
    assert widths["fpr95", 1000] / widths["fpr95", 16000] > 2


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_bootstrap must be a positive integer"):
        bootstrap_metrics([1.0], [0.0], 0, seed=0)
    with pytest.raises(ValueError, match="OOD scores contain 1 non-finite"):
        bootstrap_metrics([1.0], [np.nan], 5, seed=0)

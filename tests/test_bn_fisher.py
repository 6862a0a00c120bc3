"""bn_fisher: bn_gaussian's distance and the MSP as p-values against draws from the derived Gaussians, fused by
Fisher's method. Checked against brute-force counts, uniform p-values on the model's own draws, and planted inputs
that only one of the two parts can flag."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from peekflow.features.last_layer import LastLayer
from peekflow.features.store import FeatureSet
from peekflow.ood.base import build
from peekflow.ood.bn_fisher import BNFisher, log_msp, p_value
from peekflow.ood.bn_gaussian import lda_gaussians

RNG = np.random.default_rng(5)
MOMENTS = (RNG.uniform(1, 2, 8), RNG.uniform(0.5, 1.5, 8))
WEIGHT = RNG.normal(0, 1, (3, 8))
BIAS = RNG.normal(0, 0.5, 3)


def detector(samples=4000, seed=0) -> BNFisher:
    det = build("bn_fisher", {"samples": samples, "seed": seed})
    det.moments = MOMENTS  # what fit_model derives from a network (tested in test_bn_gaussian)
    return det


def data(z: np.ndarray, logits: np.ndarray | None = None) -> FeatureSet:
    logits = z @ WEIGHT.T + BIAS if logits is None else logits
    return FeatureSet("x", logits, z, np.zeros(len(z), np.int64), [""] * len(z),
                      last_layer=LastLayer(WEIGHT.astype(np.float32), BIAS.astype(np.float32), "fc", "layer4"))


def test_p_value_is_the_floored_empirical_cdf():
    ref = np.sort(RNG.normal(size=50))
    values = np.r_[ref[[0, 7, 49]], -10.0, 10.0, RNG.normal(size=20)]
    want = [max(sum(r <= v for r in ref) / 50, 1 / 50) for v in values]
    np.testing.assert_allclose(p_value(ref, values), want)


def test_score_is_the_sum_of_log_p_values_counted_by_brute_force():
    det = detector(samples=300, seed=3)
    z = RNG.normal(1.5, 1, (12, 8))
    got = det.score(data(z))
    # the reference the detector draws: z ~ N(mu_k, D), k uniform, from a generator seeded `seed`
    means, var = lda_gaussians(*MOMENTS, WEIGHT.astype(np.float32))
    rng = np.random.default_rng(3)
    k = rng.integers(0, 3, 300)
    drawn = means[k] + np.sqrt(var) * rng.standard_normal((300, 8))

    def distance_score(x):
        return -np.min([((x - m) ** 2 / var).sum(1) for m in means], axis=0)

    w32, b32 = WEIGHT.astype(np.float32).astype(np.float64), BIAS.astype(np.float32).astype(np.float64)
    ref_g, ref_m = distance_score(drawn), log_msp(drawn @ w32.T + b32)
    want = [np.log(max((ref_g <= g).mean(), 1 / 300)) + np.log(max((ref_m <= m).mean(), 1 / 300))
            for g, m in zip(distance_score(z), log_msp(z @ WEIGHT.T + BIAS))]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_array_equal(det.score(data(z)), got)  # drawn once, deterministic


def test_both_p_values_are_uniform_on_fresh_draws_from_the_model():
    det = detector(samples=20000)
    det.score(data(np.ones((1, 8))))  # draws the reference
    means, var = lda_gaussians(*MOMENTS, WEIGHT.astype(np.float32))
    rng = np.random.default_rng(99)
    z = means[rng.integers(0, 3, 3000)] + np.sqrt(var) * rng.standard_normal((3000, 8))
    p_g = p_value(det.references[0], det.distance_score(z))
    p_m = p_value(det.references[1], log_msp(z @ WEIGHT.astype(np.float32).T.astype(np.float64) + BIAS.astype(
        np.float32)))
    assert kstest(p_g, "uniform").pvalue > 1e-3 and kstest(p_m, "uniform").pvalue > 1e-3


def test_each_part_flags_what_the_other_misses():
    det = detector()
    means, var = lda_gaussians(*MOMENTS, WEIGHT.astype(np.float32))
    at_mean = means[[0]]
    confident, unsure = at_mean @ WEIGHT.T + BIAS, np.zeros((1, 3))  # unsure: uniform softmax
    far = at_mean + 12 * np.sqrt(var)
    typical = det.score(data(at_mean, confident))[0]
    near_ood = det.score(data(at_mean, unsure))[0]  # features at a class mean, but the classifier hesitates
    far_ood = det.score(data(far, far @ WEIGHT.T + BIAS))[0]  # confident, but far from every class Gaussian
    assert typical > near_ood and typical > far_ood
    p_confident = p_value(det.references[1], log_msp(confident))[0]
    assert near_ood - typical == pytest.approx(np.log(1 / 4000) - np.log(p_confident))  # only the MSP part moved

"""The precision audit of every registered method: each against a brute force (its formula on float64 copies of the
stored arrays, or 60-digit arithmetic for covariance inverses: tests/precision_reference.py) on adversarial inputs
(features 10^3 x the usual scale, a shared offset of 10^3, logit margins ~100, near-duplicate rows, a bank of fewer
rows than dimensions), within what its `precision` attribute states. The logit-only methods are audited against
mpmath in tests/test_ood_precision_logits.py, ODIN against its analytic gradient in tests/test_ood_methods.py."""

import numpy as np
import pytest

import precision_reference as ref
from ood_reference import scores
from peekflow.features.store import FeatureSet
from peekflow.ood.base import available, detector_class

pytest.importorskip("mpmath")

# method -> (brute force, settings); the bound is the method's own precision statement (relative unless noted)
AUDITED = {
    "react": (ref.react, {}), "dice": (ref.dice, {}), "vim": (ref.vim, {}), "residual": (ref.residual, {}),
    "she": (ref.she, {}), "fdbd": (ref.fdbd, {}), "nci": (ref.nci, {}), "mahalanobis": (ref.mahalanobis, {}),
    "rmds": (ref.rmds, {}), "gmm": (ref.gmm, {}), "nnguide": (ref.nnguide, {"k": 3}), "knn": (ref.knn, {"k": 1}),
    "ash_p": (lambda train, test: ref.ash("ash_p", test), {}),
    "ash_b": (lambda train, test: ref.ash("ash_b", test), {}),
    "ash_s": (lambda train, test: ref.ash("ash_s", test), {}), "scale": (lambda train, test: ref.scale(test), {}),
    "gradnorm": (lambda train, test: ref.gradnorm(test), {}),
}
ELSEWHERE = {"msp", "maxlogit", "energy", "entropy", "gen", "klmatching", "odin", "bn_gaussian", "bn_fisher"}
FLOAT32 = {"knn": ("absolute", 1e-6), "nnguide": ("of the largest", 1e-6)}  # float32 search, as their statements say
COARSE = ("relative", 1e-9)  # every other method: float64 throughout
# ViM / Residual: a float64 eigen-decomposition resolves the residual space to ~1e-16 x (norm / spread)^2
OFFSET = {("vim", "offset"): 1e-7, ("residual", "offset"): 1e-7}


def test_every_registered_method_is_audited_and_states_its_precision():
    main = {m for m in available() if not detector_class(m).prototype_bank}
    assert main == set(AUDITED) | ELSEWHERE
    assert all(detector_class(m).precision for m in available())


def worst(kind: str, ours: np.ndarray, exact: np.ndarray) -> float:
    error = np.abs(ours - exact)
    if kind == "absolute":
        return float(error.max())
    if kind == "of the largest":
        return float(error.max() / np.abs(exact).max())
    return float(np.max(error / np.abs(exact)))


@pytest.mark.parametrize("problem", ref.PROBLEMS)
@pytest.mark.parametrize("method", sorted(AUDITED))
def test_scores_match_the_brute_force_on_adversarial_inputs(method, problem):
    train, test = ref.adversarial(problem)
    brute, settings = AUDITED[method]
    exact = brute(train, test, **settings)
    ours = scores(method, train, test, **settings)
    kind, bound = FLOAT32.get(method, COARSE)
    bound = OFFSET.get((method, problem), bound)
    assert ours.dtype == np.float64 and worst(kind, ours, exact) <= bound


def test_the_audit_fails_float32_arithmetic():
    """The bound of the float64 methods is one a float32 product misses on these inputs (the audit can fail)."""
    train, test = ref.adversarial("offset")
    exact = ref.react(train, test)
    x32 = np.minimum(test.features, np.float32(np.percentile(train.features, 90)))
    layer = test.last_layer
    z32 = (x32 @ layer.weight.T).astype(np.float64) + layer.bias
    float32 = np.log(np.exp(z32 - z32.max(1, keepdims=True)).sum(1)) + z32.max(1)
    assert worst("relative", float32, exact) > 100 * COARSE[1]


def test_vim_and_residual_keep_the_residual_where_it_is_a_small_part_of_the_features():
    """The residual norm is the small part of ||x - u||: float32 products resolved it to ~1e-7 of ||x - u||, a
    relative error > 1e-5 of it here; float64 keeps it to the eigen-decomposition's 1e-7."""
    train, test = ref.adversarial("offset")
    norms = -ref.residual(train, test)
    centred = test.features.astype(np.float64) + np.linalg.pinv(test.last_layer.weight) @ test.last_layer.bias
    assert norms.max() < 1e-2 * np.linalg.norm(centred, axis=1).min()
    assert worst("relative", -scores("residual", train, test), norms) <= 1e-7
    u = -np.linalg.pinv(train.last_layer.weight.astype(np.float64)) @ train.last_layer.bias
    fit = train.features.astype(np.float64) - u
    basis = np.linalg.eigh(fit.T @ fit / len(fit))[1][:, :8]  # ViM's residual space (default dim 8 of 16)
    float32 = np.linalg.norm((test.features - u.astype(np.float32)) @ basis.astype(np.float32), axis=1)  # as before
    assert worst("relative", float32.astype(np.float64), norms) > 1e-5


def test_knn_distance_of_near_duplicates_is_within_float32_resolution():
    """A query within 1e-6 of a bank row: its distance (~1e-6) is exact to float32 unit vectors' ~3e-8 absolute,
    the method's stated bound; scores of far rows are exact to the same."""
    train, test = ref.adversarial("near_duplicates")
    exact = ref.knn(train, test, 1)
    ours = scores("knn", train, test, k=1)
    assert np.abs(exact[:40]).max() < 1e-5  # the near duplicates
    assert np.abs(ours - exact).max() <= 1e-6


def test_bn_gaussian_distance_and_fisher_confidence_at_the_edges():
    """bn_gaussian's distance for features 10^3 x the usual scale about a shared offset, against the direct sum;
    bn_fisher's log MSP for margins up to 100 (float64 log(1 + tiny) rounded every such row to 0)."""
    from mpmath import mp

    from peekflow.ood.bn_fisher import log_msp
    from peekflow.ood.bn_gaussian import BNGaussian

    rng = np.random.default_rng(3)
    detector = BNGaussian()
    detector.means = 1e3 + rng.normal(0, 1e-3, (4, 6))
    detector.var = rng.uniform(1e-7, 1e-6, 6)
    z = (1e3 + rng.normal(0, 1e-3, (20, 6))).astype(np.float32).astype(np.float64)
    exact = -np.min([((z - m) ** 2 / detector.var).sum(1) for m in detector.means], axis=0)
    assert worst("relative", detector.distance_score(z), exact) <= 1e-9

    logits = rng.normal(0, 1, (12, 5))
    logits[np.arange(12), 0] += np.linspace(0, 100, 12)
    mp.dps = 100
    rows = [[mp.mpf(float(v)) for v in row] for row in logits]
    exact = np.array([float(-mp.log(mp.fsum(mp.exp(v - max(r)) for v in r))) for r in rows])
    assert worst("relative", log_msp(logits), exact) <= 1e-12


def test_bank_variants_share_their_methods_arithmetic():
    """`<method>_<bank>` is the same class fitted on a prototype bank: the audit of the method covers it."""
    train, test = ref.adversarial("small_bank")
    bank = FeatureSet("prototypes", train.logits, train.features, train.labels, [""] * len(train.labels),
                      last_layer=train.last_layer)
    for method in ["vim", "mahalanobis", "gmm"]:
        np.testing.assert_array_equal(scores(f"{method}_deepdream", bank, test), scores(method, train, test))

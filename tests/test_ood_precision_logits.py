"""The logit-only methods against 500-digit arithmetic (mpmath) on the same stored logits, at the edges confident
models reach: margins up to 100 (and 800), ties at the top, one class far ahead of a second far ahead of the rest,
K = 1, 2, 10 and 1000. Each method must keep the precision its `precision` attribute states."""

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")
from mpmath import mp, mpf  # noqa: E402

from peekflow.features.store import FeatureSet  # noqa: E402
from peekflow.ood.base import build  # noqa: E402


@pytest.fixture(autouse=True)
def digits():
    """500 digits: 1 - p of a margin of 800 is ~1e-348, and plain 1 - p keeps 150 digits of it."""
    with mp.workdps(500):
        yield


def adversarial_logits(k: int, seed: int) -> np.ndarray:
    """float32 [n, k] logits (as stored): random rows, then rows whose top class leads by margins from 0 to 800, two
    classes tied at the top (alone or far ahead), a class far ahead of a second far ahead of the rest, all equal,
    and a large common offset."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(0, 3, k) for _ in range(6)]
    for margin in [0.0, 1e-6, 1e-3, 0.5, 5, 20, 30, 37, 45, 60, 100, 800]:
        row = rng.normal(0, 3, k)
        row[rng.integers(k)] = row.max() + margin
        rows.append(row)
    if k >= 2:
        for margin in [0.0, 40, 100]:  # two classes tied at the top, `margin` ahead of the rest
            row = rng.normal(0, 3, k)
            row[[0, k - 1]] = row.max() + margin
            rows.append(row)
    if k >= 3:
        row = rng.normal(0, 1, k)
        row[1], row[2] = 100.0, 50.0  # one class far ahead of a second, far ahead of the rest
        rows.append(row)
    rows += [np.zeros(k), rng.normal(0, 3, k) + 1000.0, rng.normal(0, 3, k) - 1000.0]
    return np.stack(rows).astype(np.float32)


def softmax_mp(row) -> list:
    z = [mpf(float(v)) for v in row]
    top = max(z)
    e = [mp.exp(v - top) for v in z]
    total = mp.fsum(e)
    return [v / total for v in e]


def gen_reference(row, gamma: float, top: int) -> float:
    p = sorted(softmax_mp(row), reverse=True)[:top]
    return -float(mp.fsum(v ** gamma * (1 - v) ** gamma for v in p))


def entropy_reference(row) -> float:
    return float(mp.fsum(v * mp.log(v) for v in softmax_mp(row) if v > 0))


def kl_reference(fit: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """-min_k KL(p || d_k), d_k the mean softmax of the fit rows predicted k (argmax of the stored logits)."""
    predicted = fit.argmax(axis=1)
    templates = []
    for k in np.unique(predicted):
        members = [softmax_mp(row) for row in fit[predicted == k]]
        templates.append([mp.fsum(column) / len(members) for column in zip(*members)])
    out = []
    for row in queries:
        p = softmax_mp(row)
        out.append(-min(mp.fsum(pj * (mp.log(pj) - mp.log(dj)) for pj, dj in zip(p, d) if pj > 0) for d in templates))
    return np.array([float(v) for v in out])


def logit_set(z: np.ndarray, name: str) -> FeatureSet:
    n = len(z)
    return FeatureSet(name, z, None, np.full(n, -1), [f"/{name}/{i}.png" for i in range(n)])


def relative_error(ours: np.ndarray, exact: np.ndarray) -> float:
    """max |ours - exact| / |exact| (an exact 0, a value below float64's range, must be met exactly)."""
    assert ours.dtype == np.float64 and ours.shape == exact.shape
    error = np.abs(ours - exact)
    return float(np.max(np.divide(error, np.abs(exact), out=np.where(error > 0, np.inf, 0.0), where=exact != 0)))


@pytest.mark.parametrize("k, seed", [(1, 0), (2, 1), (10, 2), (1000, 3)])
@pytest.mark.parametrize("gamma, top", [(0.1, 100), (0.5, 3), (2.0, 1)])
def test_gen_is_exact_for_any_margin(k, seed, gamma, top):
    z = adversarial_logits(k, seed)
    exact = np.array([gen_reference(row, gamma, top) for row in z])
    ours = build("gen", {"gamma": gamma, "top": top}).score(logit_set(z, "test"))
    if k == 1:  # p = 1: every term is 0
        assert (ours == 0).all() and (exact == 0).all()
        return
    assert relative_error(ours, exact) <= 1e-12


def test_gen_keeps_the_predicted_class_term_where_1_minus_p_is_below_float64_resolution():
    """The issue's case: 1 - p < 1.1e-16 made q = 0 and dropped the largest term (score -0.032 for the exact -0.057)."""
    z = np.array([[40.0, 0.0, -1.0, -2.0]], dtype=np.float32)
    exact = gen_reference(z[0], 0.1, 100)
    ours = build("gen").score(logit_set(z, "test"))[0]
    assert abs(ours - exact) <= 1e-12 * abs(exact)
    p = softmax_mp(z[0])
    terms = [float(v ** 0.1 * (1 - v) ** 0.1) for v in p]
    assert terms[0] == max(terms) and terms[0] > 0.25 * abs(exact)  # the predicted class's term: the largest
    assert 1.0 - float(p[0]) == 0.0  # which a float64 1 - p loses


@pytest.mark.parametrize("k, seed", [(2, 4), (10, 5), (1000, 6)])
def test_entropy_is_exact_for_any_margin(k, seed):
    z = adversarial_logits(k, seed)
    exact = np.array([entropy_reference(row) for row in z])
    ours = build("entropy").score(logit_set(z, "test"))
    assert relative_error(ours, exact) <= 1e-12


@pytest.mark.parametrize("k, seed", [(2, 7), (10, 8)])
def test_klmatching_is_exact_for_confident_rows(k, seed):
    """Templates of confident fit rows (entries within 1e-13 of 1, the issue's prototype banks), scored for
    confident, tied and far queries."""
    rng = np.random.default_rng(seed)
    fit = adversarial_logits(k, seed)
    confident = rng.normal(0, 1, (4 * k, k))
    confident[np.arange(4 * k), np.arange(4 * k) % k] += rng.uniform(20, 40, 4 * k)  # 1 - p ~ 1e-9 .. 1e-17
    fit = np.concatenate([fit, confident.astype(np.float32)])
    queries = adversarial_logits(k, seed + 100)
    exact = kl_reference(fit, queries)
    train = logit_set(fit, "train")
    ours = build("klmatching").fit(train).score(logit_set(queries, "test"))
    assert relative_error(ours, exact) <= 1e-9


def test_klmatching_resolves_a_template_entry_near_1():
    """The issue's klmatching_deepdream rows: KL ~ 3e-8 against a template whose entry is ~1 - 1e-8. float32
    templates resolve such an entry only to ~6e-8, the size of the KL itself."""
    fit = np.array([[20.0, 0.0, 1.0], [18.0, 1.0, 0.5], [0.0, 19.0, 1.0]], dtype=np.float32)
    queries = np.array([[17.5, 0.2, 0.0], [21.0, 3.0, 0.0], [0.1, 18.0, 0.3]], dtype=np.float32)
    exact = kl_reference(fit, queries)
    assert np.all(np.abs(exact) < 1e-6)
    ours = build("klmatching").fit(logit_set(fit, "train")).score(logit_set(queries, "test"))
    assert relative_error(ours, exact) <= 1e-9


def test_msp_maxlogit_energy_at_the_edges():
    """Float64 values of exactly computed scores: MSP = 1 / sum_k exp(z_k - max), MaxLogit, Energy (T = 1 and 7)."""
    z = adversarial_logits(10, 9)
    rows = [[mpf(float(v)) for v in row] for row in z]
    msp = np.array([float(1 / mp.fsum(mp.exp(v - max(r)) for v in r)) for r in rows])
    assert relative_error(build("msp").score(logit_set(z, "test")), msp) <= 1e-15
    np.testing.assert_array_equal(build("maxlogit").score(logit_set(z, "test")), z.max(axis=1).astype(np.float64))
    for t in [1.0, 7.0]:
        energy = np.array([float(t * mp.log(mp.fsum(mp.exp(v / t) for v in r))) for r in rows])
        assert relative_error(build("energy", {"temperature": t}).score(logit_set(z, "test")), energy) <= 1e-14

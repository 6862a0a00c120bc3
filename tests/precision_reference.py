"""Brute-force references of the feature methods for tests/test_ood_precision_features.py: each method's formula written
out plainly on float64 copies of the stored float32 arrays, or in 60-digit arithmetic (mpmath) where float64 itself
would lose what is tested (inverses of singular or badly scaled covariances), and the adversarial problems they are
checked on."""

import numpy as np
from scipy.special import logsumexp

from ood_reference import problem, store
from peekflow.features.store import FeatureSet

PROBLEMS = ["typical", "scaled", "offset", "confident", "near_duplicates", "small_bank", "small_bank_scaled"]


def adversarial(kind: str, seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
    """(train, test) stores of one adversarial kind: typical features; features 10^3 x the usual scale; a last layer
    30 x larger (logit margins up to ~100); test rows within 1e-6 (relative) of training rows and of each other, next
    to a training store holding near-duplicate pairs; a bank of 12 rows in 16 dimensions (5 classes), also 10^3 x; a
    common offset of 10^3 in every feature (logits unchanged)."""
    w, b, train, test = problem(seed, n_train=12 if kind.startswith("small_bank") else 300, n_test=40)
    xtr, xte = train.features.astype(np.float64), test.features.astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    if kind in ("scaled", "small_bank_scaled"):
        xtr, xte = 1e3 * xtr, 1e3 * xte
    if kind == "offset":  # a large activation shared by every row (spread 1e-3 of the norm), the bias cancelling it
        xtr, xte, b = xtr + 1e3, xte + 1e3, b - 1e3 * w.sum(1)
    if kind == "confident":
        w = 30 * w
    if kind == "near_duplicates":
        xtr[1:60:2] = xtr[0:60:2] * (1 + 1e-6 * rng.standard_normal(xtr[0:60:2].shape))
        near = xtr[:20] * (1 + 1e-6 * rng.standard_normal((20, xtr.shape[1])))
        xte = np.concatenate([near, near * (1 + 1e-7 * rng.standard_normal(near.shape)), xte])
    test_labels = np.full(len(xte), -1)
    return (store("train", xtr.astype(np.float32), w, b, train.labels),
            store("test", xte.astype(np.float32), w, b, test_labels))


def arrays(data: FeatureSet):
    """(features, stored logits, W, b) as float64."""
    layer = data.last_layer
    return (data.features.astype(np.float64), data.logits.astype(np.float64), layer.weight.astype(np.float64),
            layer.bias.astype(np.float64))


def _mp():
    from mpmath import mp

    return mp


def sixty_digits(reference):
    """Run `reference` with mpmath at 60 digits (and the caller's precision restored after)."""
    import functools

    @functools.wraps(reference)
    def run(*args, **kwargs):
        with _mp().workdps(60):
            return reference(*args, **kwargs)

    return run


def energy(x, w, b):
    return logsumexp(x @ w.T + b, axis=1)


def kept_top(x, percentile):
    """Boolean mask of the D - round(D p / 100) largest entries per row."""
    keep = x.shape[1] - int(np.round(x.shape[1] * percentile / 100))
    order = np.argsort(-x, axis=1, kind="stable")[:, :keep]
    mask = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def react(train, test, percentile=90.0):
    x, _, w, b = arrays(test)
    return energy(np.minimum(x, np.percentile(arrays(train)[0], percentile)), w, b)


def ash(variant, test, percentile=90.0):
    x, _, w, b = arrays(test)
    mask = kept_top(x, percentile)
    pruned = np.where(mask, x, 0.0)
    if variant == "ash_p":
        return energy(pruned, w, b)
    if variant == "ash_b":
        return energy(mask * (x.sum(1) / mask.sum(1))[:, None], w, b)
    return energy(pruned * np.exp(x.sum(1) / pruned.sum(1))[:, None], w, b)


def scale(test, percentile=85.0):
    x, _, w, b = arrays(test)
    return energy(x * np.exp(x.sum(1) / np.where(kept_top(x, percentile), x, 0).sum(1))[:, None], w, b)


def dice(train, test, sparsity=0.7):
    x, _, w, b = arrays(test)
    contribution = arrays(train)[0].mean(0) * w
    return energy(x, np.where(contribution > np.quantile(contribution, sparsity), w, 0.0), b)


def gradnorm(test):
    x, _, w, b = arrays(test)
    z = x @ w.T + b
    p = np.exp(z - logsumexp(z, axis=1, keepdims=True))
    return np.abs(x).sum(1) * np.abs(len(b) * p - 1).sum(1)


@sixty_digits
def residual_parts(train, test, dim):
    """(energy of the test rows, residual norms of the test rows, alpha) of ViM's formula, the residual space from a
    60-digit eigen-decomposition (float64's resolves it only to ~1e-16 x (norm / spread)^2 of the features)."""
    mp = _mp()
    xtr, _, w, b = arrays(train)
    u = -np.linalg.pinv(w) @ b
    fit = [_mp_matrix(row - u) for row in xtr]
    values, vectors = mp.eigsy(_mp_scatter(mp, fit, len(fit)))
    residual = sorted(range(len(values)), key=lambda i: values[i])[: xtr.shape[1] - dim]
    basis = mp.matrix([[vectors[i, j] for j in residual] for i in range(xtr.shape[1])])

    def norms(rows):
        return np.array([float(mp.norm(row * basis)) for row in rows])

    x = arrays(test)[0]
    alpha = (xtr @ w.T + b).max(1).mean() / norms(fit).mean()
    return energy(x, w, b), norms([_mp_matrix(row - u) for row in x]), alpha


def vim(train, test, dim=8):
    e, norms, alpha = residual_parts(train, test, dim)
    return e - alpha * norms


def residual(train, test, dim=8):
    return -residual_parts(train, test, dim)[1]


def she(train, test):
    xtr, ztr, _, _ = arrays(train)
    y = np.asarray(train.labels)
    right = ztr.argmax(1) == y
    # a class without a right row stores no pattern (peekflow's documented variant): its inputs score 0
    patterns = np.stack([xtr[right & (y == c)].mean(0) if (right & (y == c)).any() else np.zeros(xtr.shape[1])
                         for c in range(ztr.shape[1])])
    x, z, _, _ = arrays(test)
    return (x * patterns[z.argmax(1)]).sum(1)


def nnguide(train, test, k=10):
    xtr, ztr, _, _ = arrays(train)
    x, z, _, _ = arrays(test)
    bank = logsumexp(ztr, axis=1)[:, None] * xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    similarity = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ bank.T
    return logsumexp(z, axis=1) * np.sort(similarity, axis=1)[:, -k:].mean(1)


def fdbd(train, test):
    x, _, w, b = arrays(test)
    z = x @ w.T + b
    y = z.argmax(1)
    gaps = np.linalg.norm(w[y][:, None, :] - w[None, :, :], axis=2)
    ratio = np.divide(np.abs(z - z[np.arange(len(z)), y][:, None]), gaps, out=np.zeros_like(z), where=gaps > 0)
    distance = np.maximum(np.linalg.norm(x - arrays(train)[0].mean(0), axis=1), 1e-8)
    return ratio.sum(1) / ((z.shape[1] - 1) * distance)


def nci(train, test, alpha=0.0):
    x, _, w, b = arrays(test)
    centred = x - arrays(train)[0].mean(0)
    proximity = (centred * w[(x @ w.T + b).argmax(1)]).sum(1) / np.linalg.norm(centred, axis=1)
    return proximity + alpha * np.abs(x).sum(1)


def knn(train, test, k=5):
    bank, x = arrays(train)[0], arrays(test)[0]
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    distances = np.sqrt(((x[:, None, :] - bank[None, :, :]) ** 2).sum(-1))
    return -np.sort(distances, axis=1)[:, k - 1]


# --- 60-digit references: covariance inverses --------------------------------------------------------------------

def _mp_matrix(x):
    mp = _mp()
    return mp.matrix([[mp.mpf(float(v)) for v in row] for row in np.atleast_2d(x)])


def _mp_pinv_distances(mp, rows, centres, cov):
    """(x - m)^T pinv(cov) (x - m) [n, C] for mp row vectors `rows` and `centres`; pinv drops the eigenvalues below
    1e-40 of the largest (60 digits: exact zeros come out near 1e-58)."""
    values, vectors = mp.eigsy(cov)
    top = max(values)
    keep = [i for i in range(len(values)) if values[i] > top * mp.mpf("1e-40")]
    out = np.empty((len(rows), len(centres)))
    for i, x in enumerate(rows):
        for c, m in enumerate(centres):
            d = x - m
            out[i, c] = float(mp.fsum((mp.fsum(d[j] * vectors[j, e] for j in range(d.cols)) ** 2) / values[e]
                                      for e in keep))
    return out


def _mp_class_stats(x, labels):
    mp = _mp()
    rows = [_mp_matrix(r) for r in x]
    classes = sorted(set(int(v) for v in labels if v >= 0))
    means = [sum((rows[i] for i in range(len(rows)) if labels[i] == c), mp.zeros(1, x.shape[1])) /
             int((labels == c).sum()) for c in classes]
    return mp, rows, classes, means


def _mp_scatter(mp, deviations, n):
    d = deviations[0].cols
    cov = mp.zeros(d, d)
    for v in deviations:
        cov += v.T * v
    return cov / n


@sixty_digits
def mahalanobis(train, test):
    x, labels = arrays(train)[0], np.asarray(train.labels)
    mp, rows, classes, means = _mp_class_stats(x, labels)
    cov = _mp_scatter(mp, [rows[i] - means[classes.index(int(labels[i]))] for i in range(len(rows))], len(rows))
    return -_mp_pinv_distances(mp, [_mp_matrix(r) for r in arrays(test)[0]], means, cov).min(1)


@sixty_digits
def rmds(train, test):
    x, labels = arrays(train)[0], np.asarray(train.labels)
    mp, rows, classes, means = _mp_class_stats(x, labels)
    cov = _mp_scatter(mp, [rows[i] - means[classes.index(int(labels[i]))] for i in range(len(rows))], len(rows))
    mean0 = sum(rows, mp.zeros(1, x.shape[1])) / len(rows)
    cov0 = _mp_scatter(mp, [r - mean0 for r in rows], len(rows))
    queries = [_mp_matrix(r) for r in arrays(test)[0]]
    background = _mp_pinv_distances(mp, queries, [mean0], cov0)
    return -(_mp_pinv_distances(mp, queries, means, cov) - background).min(1)


@sixty_digits
def gmm(train, test, reg=1e-6):
    x, labels = arrays(train)[0], np.asarray(train.labels)
    mp, rows, classes, means = _mp_class_stats(x, labels)
    queries = [_mp_matrix(r) for r in arrays(test)[0]]
    d = x.shape[1]
    per_class = []
    for c, m in zip(classes, means):
        members = [rows[i] - m for i in range(len(rows)) if labels[i] == c]
        cov = _mp_scatter(mp, members, len(members)) + reg * mp.eye(d)
        factor = mp.cholesky(cov)
        log_det = 2 * mp.fsum(mp.log(factor[i, i]) for i in range(d))
        constant = mp.log(mp.mpf(len(members)) / len(rows)) - (log_det + d * mp.log(2 * mp.pi)) / 2
        per_class.append([constant - mp.fsum(v ** 2 for v in mp.lu_solve(factor, (q - m).T)) / 2 for q in queries])
    return np.array([float(mp.log(mp.fsum(mp.exp(v[i]) for v in per_class))) for i in range(len(queries))])

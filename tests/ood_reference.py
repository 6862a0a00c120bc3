"""Shared helpers of the post-hoc detector tests: small synthetic stores with a last layer, and pytorch-ood (a test-only
reference, never imported by peekflow) run in float64 on the same arrays."""

import contextlib

import numpy as np
import torch

from peekflow.features.last_layer import LastLayer
from peekflow.features.store import FeatureSet
from peekflow.ood.base import build

D, K = 16, 5


def problem(seed=0, n_train=300, n_test=120, d=D, k=K):
    """(W [k,d], b [k], labelled train FeatureSet, test FeatureSet): non-negative features (post-ReLU, pooled), class
    means apart so that a trained-like head classifies most train rows right."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 1.0, (k, d))
    w = (centres - centres.mean(0)) / 2 + rng.normal(0, 0.1, (k, d))
    b = rng.normal(0, 0.3, k)

    def rows(n, name, labelled):
        y = rng.integers(0, k, n)
        x = np.abs(centres[y] + rng.normal(0, 0.7, (n, d)))
        if not labelled:
            x[n // 2:] = rng.gamma(1.5, 1.2, (n - n // 2, d))  # an OOD half
        return store(name, x.astype(np.float32), w, b, y if labelled else np.full(n, -1))

    return w, b, rows(n_train, "train", True), rows(n_test, "test", False)


def store(name, x, w, b, labels):
    layer = LastLayer(w.astype(np.float32), b.astype(np.float32), "fc", "penultimate")
    return FeatureSet(name=name, logits=layer.logits(x).astype(np.float32), features=x,
                      labels=np.asarray(labels, dtype=np.int64), paths=[f"/{name}/{i}.png" for i in range(len(x))],
                      last_layer=layer, source=f"/stores/{name}.h5")


def scores(method, train, test, **settings):
    detector = build(method, settings)
    if detector.needs_fit:
        detector.fit(train)
    return detector.score(test)


def head(train):
    """torch Linear (float64) with the store's W, b."""
    layer = train.last_layer
    linear = torch.nn.Linear(layer.weight.shape[1], layer.weight.shape[0]).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(layer.weight.astype(np.float64)))
        linear.bias.copy_(torch.from_numpy(layer.bias.astype(np.float64)))
    return linear


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def tlabels(fs):
    return torch.from_numpy(np.asarray(fs.labels, dtype=np.int64))


@contextlib.contextmanager
def float64():
    """pytorch-ood's parameters and buffers in float64, so that differences are peekflow's, not float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def assert_close(ours, reference, rtol=1e-4, floor=1e-3):
    """Per-sample agreement within rtol relative to |reference|, floored at `floor` x the largest |reference| (values
    near zero; floor=1: relative to the largest, for references that compute in float32 and cancel terms)."""
    reference = np.asarray(reference.detach().numpy() if torch.is_tensor(reference) else reference, dtype=np.float64)
    scale = np.maximum(np.abs(reference), floor * np.abs(reference).max())
    worst = float(np.max(np.abs(ours - reference) / scale))
    assert ours.shape == reference.shape and worst <= rtol, f"max relative difference {worst:.3g} > {rtol}"
    return worst

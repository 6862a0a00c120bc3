"""Degenerate OOD fits are named: a low-rank Mahalanobis covariance, a KNN bank too small for k or for the classes."""

import logging

import numpy as np
import pytest

from peekflow.features.store import FeatureSet
from peekflow.ood.base import build


def feature_set(features, labels, classes, name="train"):
    n = len(features)
    return FeatureSet(name, np.zeros((n, classes), np.float32), np.asarray(features, np.float32), np.asarray(labels),
                      [f"/{name}/{i}.png" for i in range(n)])


def test_mahalanobis_with_one_image_per_class_is_refused(caplog):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"covariance of 'train' has rank 0 \(3 rows, 3 classes.*every score would "
                                         r"be equal"):
        build("mahalanobis").fit(feature_set(rng.normal(size=(3, 8)), [0, 1, 2], 3))
    with caplog.at_level(logging.WARNING, logger="peekflow"):
        build("mahalanobis").fit(feature_set(rng.normal(size=(6, 8)), [0, 1, 2] * 2, 3))
    assert "covariance rank 3 of 8 feature dimensions (6 rows, 3 classes: at least 11 rows" in caplog.text


def test_knn_bank_smaller_than_k_or_the_classes(caplog):
    bank = feature_set(np.random.default_rng(1).normal(size=(4, 8)), [0, 1, 2, 3], 10)
    with pytest.raises(ValueError, match=r"k=5 exceeds the bank size 4 of 'train': choose k <= 4"):
        build("knn", {"k": 5}).fit(bank)
    with caplog.at_level(logging.WARNING, logger="peekflow"):
        build("knn", {"k": 2}).fit(bank)
    assert "bank 'train' has 4 rows for 10 classes: some classes have no reference point" in caplog.text

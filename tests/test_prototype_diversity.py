"""The prototype quality report says whether one class's prototypes differ (within- vs between-class distance)."""

import numpy as np

from peekflow.prototypes.quality import diversity


def test_near_duplicates_within_a_class_show_in_the_report():
    rng = np.random.default_rng(0)
    per_class = np.repeat(rng.random((3, 3, 8, 8)), 2, axis=0)  # two copies of each class's image ...
    images, targets = per_class + 0.01 * rng.random(per_class.shape), np.repeat(np.arange(3), 2)  # ... barely apart
    report = diversity(images, targets)
    assert report["within_class_mean_abs_diff"] < 0.01 < 0.2 < report["between_class_mean_abs_diff"]
    assert diversity(images[::2], targets[::2])["within_class_mean_abs_diff"] is None  # one per class: no pairs

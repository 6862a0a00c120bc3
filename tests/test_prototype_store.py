import h5py
import numpy as np
import pytest
from PIL import Image

from peekflow.figures import image_grid, save_grid
from peekflow.io import IncompleteFileError
from peekflow.prototypes.store import Prototypes, read_prototypes, write_prototypes


def sample(n=6):
    rng = np.random.default_rng(0)
    return Prototypes(images=rng.random((n, 3, 8, 8), dtype=np.float32), targets=np.arange(n) % 3,
                      losses=rng.random(n, dtype=np.float32), method="deepdream", model="m",
                      classes=["a", "b", "c"], settings={"lr": 0.05, "steps": 10})


def test_round_trip(tmp_path):
    p = sample()
    write_prototypes(tmp_path / "p.h5", p)
    q = read_prototypes(tmp_path / "p.h5")
    assert np.array_equal(q.images, p.images) and np.array_equal(q.targets, p.targets)
    assert np.array_equal(q.losses, p.losses) and q.classes == p.classes and q.settings == p.settings


def test_refuses_out_of_range_images_and_incomplete_files(tmp_path):
    p = sample()
    p.images[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"must lie in \[0,1\]"):
        write_prototypes(tmp_path / "p.h5", p)
    assert not (tmp_path / "p.h5").exists()
    with h5py.File(tmp_path / "half.h5", "w") as h5:
        h5["images"] = np.zeros((1, 3, 2, 2))
    with pytest.raises(IncompleteFileError, match="half.h5 is incomplete"):
        read_prototypes(tmp_path / "half.h5")


def test_grid_places_each_image_in_its_cell(tmp_path):
    images = np.zeros((5, 3, 4, 4), dtype=np.float32)
    for i in range(5):
        images[i, i % 3] = 1.0  # red, green, blue, red, green
    grid = np.asarray(image_grid(images, ncol=3, scale=1, pad=1))
    assert grid.shape == (1 + 2 * 5, 1 + 3 * 5, 3)
    for i in range(5):
        r, c = divmod(i, 3)
        pixel = grid[1 + r * 5 + 1, 1 + c * 5 + 1]
        assert pixel.argmax() == i % 3 and pixel.max() == 255
    save_grid(tmp_path / "g.png", images, labels=list("abcde"))
    assert Image.open(tmp_path / "g.png").size[0] > 0


def test_quality_uses_png_quantisation_and_maps_classes_by_name():
    import torch

    from peekflow.data.folder import Preprocessing
    from peekflow.prototypes.quality import accuracy_and_confidence, predict, translate_targets

    class MeanColour(torch.nn.Module):  # logits = per-channel mean of the *normalised* input
        def forward(self, x):
            return x.mean((2, 3))

    images = np.zeros((3, 3, 4, 4), dtype=np.float32)
    for i in range(3):
        images[i, i] = 0.6 + 0.001  # quantised to 153/255 = 0.6
    prep = Preprocessing(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    probs = predict(MeanColour(), images, prep, "cpu")
    expected = torch.softmax(torch.eye(3) * 153 / 255, 1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    acc, conf = accuracy_and_confidence(probs, np.array([0, 1, 0]))
    assert acc == pytest.approx(2 / 3) and conf == pytest.approx((expected[0, 0] + expected[1, 1] + expected[2, 0]) / 3)
    assert translate_targets(np.array([0, 2]), ["a", "b", "c"], ["c", "a", "b"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"no class\(es\) \['c'\]"):
        translate_targets(np.array([2]), ["a", "b", "c"], ["a", "b"])

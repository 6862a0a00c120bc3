"""Spatial maps in the feature store (`maps/<layer>`, float16), written only when extraction asks for them."""

import json

import h5py
import numpy as np
import torch
from PIL import Image

from peekflow.cli import main
from peekflow.data.folder import Preprocessing
from peekflow.features.store import open_store
from peekflow.models.checkpoint import load_model

from conftest import TINY_MODEL


def extract(images, checkpoint, out, **settings):
    settings = {"layers": ["layer4"], "batch_size": 4, **settings}
    return main(["extract", "--checkpoint", str(checkpoint), "--model", json.dumps(TINY_MODEL), "--images", str(images),
                 "--dataset-name", "tiny", "--settings", json.dumps(settings), "--device", "cpu",
                 "--out", str(out)])


def test_maps_equal_the_layer_outputs_of_a_direct_forward(tmp_path, image_folder, tiny_checkpoint):
    out = tmp_path / "maps.h5"
    assert extract(image_folder, tiny_checkpoint, out, maps=["layer1", "layer4"]) == 0  # layer1: maps only
    model, _ = load_model(tiny_checkpoint, "small_resnet", 3)
    prep = Preprocessing(**TINY_MODEL["preprocessing"])
    x = torch.stack([prep(Image.open(p).convert("RGB")) for p in sorted(image_folder.glob("*/*.png"))])
    acts = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
             for n in ("layer1", "layer4")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    with open_store(out) as h5:
        assert sorted(h5["maps"]) == ["layer1", "layer4"] and sorted(h5["features"]) == ["layer4"]
        assert json.loads(h5.attrs["maps"]) == ["layer1", "layer4"]
        for name in ("layer1", "layer4"):
            stored = h5[f"maps/{name}"]
            assert stored.dtype == np.float16 and stored.shape == tuple(acts[name].shape)  # [N, C, H, W]
            np.testing.assert_allclose(stored[:].astype(np.float32), acts[name].numpy(), rtol=1e-3, atol=1e-3)


def test_store_without_maps_is_unchanged(tmp_path, image_folder, tiny_checkpoint):
    plain, with_maps = tmp_path / "plain.h5", tmp_path / "with_maps.h5"
    assert extract(image_folder, tiny_checkpoint, plain) == 0
    assert extract(image_folder, tiny_checkpoint, with_maps, maps=["layer4"]) == 0
    with h5py.File(plain) as a, h5py.File(with_maps) as b:
        names = []
        a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        # the classifier's last layer is recorded beside the features (the post-hoc OOD methods read it)
        assert sorted(names) == ["features/layer4", "labels", "last_layer/bias", "last_layer/weight", "logits",
                                 "maxact/layer4", "paths"]
        assert "maps" not in a.attrs and set(b.attrs) - set(a.attrs) == {"maps"}
        for name in names:
            np.testing.assert_array_equal(a[name][:], b[name][:])


def test_maps_of_a_layer_without_spatial_output_fail_naming_it(tmp_path, image_folder, tiny_checkpoint, capsys):
    assert extract(image_folder, tiny_checkpoint, tmp_path / "bad.h5", maps=["fc"]) == 1
    assert "'fc'" in capsys.readouterr().err and not (tmp_path / "bad.h5").exists()

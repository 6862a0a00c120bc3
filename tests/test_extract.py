import json
import threading

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from peekflow.cli import main
from peekflow.data.folder import Preprocessing
from peekflow.features.extract import ExtractSettings, extract_features
from peekflow.features.store import load_feature_set, open_store
from peekflow.io import IncompleteFileError
from peekflow.models.checkpoint import load_model
from peekflow.shards import Batches, partial_path

from conftest import TINY_MODEL, write_folder
from test_resume import assert_same_store

LAYERS = ["layer2", "layer4"]


def extract(tmp_path, images, checkpoint, out, **settings):
    settings = {"layers": LAYERS, "batch_size": 4, **settings}
    return main([
        "extract", "--checkpoint", str(checkpoint), "--model", json.dumps(TINY_MODEL), "--images", str(images),
        "--dataset-name", "tiny", "--settings", json.dumps(settings), "--device", "cpu", "--out", str(out),
    ])


def test_store_equals_direct_computation(tmp_path, image_folder, tiny_checkpoint):
    out = tmp_path / "store.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, out) == 0
    model, _ = load_model(tiny_checkpoint, "small_resnet", 3)
    transform = Preprocessing(**TINY_MODEL["preprocessing"])
    paths = sorted(str(p) for p in image_folder.glob("*/*.png"))
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    acts = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in LAYERS]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    with open_store(out) as h5:
        assert [p.decode() for p in h5["paths"][:]] == paths
        np.testing.assert_array_equal(h5["labels"][:], [0] * 5 + [1] * 5 + [2] * 5)
        np.testing.assert_allclose(h5["logits"][:], logits.numpy(), rtol=1e-5, atol=1e-5)
        for n in LAYERS:
            np.testing.assert_allclose(h5[f"features/{n}"][:], acts[n].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(h5[f"maxact/{n}"][:], acts[n].amax((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
            assert h5[f"features/{n}"].dtype == np.float32
        assert json.loads(h5.attrs["preprocessing"])["std"] == [0.25, 0.25, 0.25]
        assert h5.attrs["model"] == "tiny" and h5.attrs["dataset"] == "tiny" and h5.attrs["complete"]
        assert json.loads(h5.attrs["classes"]) == ["a", "b", "c"]


def test_unknown_class_folders_get_label_minus_one(tmp_path, tiny_checkpoint):
    images = write_folder(tmp_path / "ood", ["zebra", "b"], per_class=2)
    out = tmp_path / "ood.h5"
    assert extract(tmp_path, images, tiny_checkpoint, out) == 0
    fs = load_feature_set(out, "layer4")
    np.testing.assert_array_equal(fs.labels, [1, 1, -1, -1])
    assert fs.features.shape == (4, 8)


def test_same_inputs_same_store(tmp_path, image_folder, tiny_checkpoint):
    for name in ("one.h5", "two.h5"):
        assert extract(tmp_path, image_folder, tiny_checkpoint, tmp_path / name, batch_size=7) == 0
    a, b = load_feature_set(tmp_path / "one.h5", "layer4"), load_feature_set(tmp_path / "two.h5", "layer4")
    assert np.array_equal(a.logits, b.logits) and np.array_equal(a.features, b.features)


def test_corrupt_image_fails_naming_it_and_keeps_the_old_store(tmp_path, image_folder, tiny_checkpoint, capsys):
    out = tmp_path / "store.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, out) == 0
    before = out.read_bytes()
    bad = image_folder / "b" / "002.png"
    bad.write_bytes(b"\x89PNG truncated")
    assert extract(tmp_path, image_folder, tiny_checkpoint, out) == 1
    assert f"cannot read image {bad}" in capsys.readouterr().err
    assert out.read_bytes() == before  # the complete store from before is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_skip_corrupt_lists_skipped_images(tmp_path, image_folder, tiny_checkpoint):
    bad = image_folder / "a" / "001.png"
    bad.write_bytes(b"junk")
    out = tmp_path / "store.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, out, skip_corrupt=True) == 0
    fs = load_feature_set(out, "layer2")
    assert len(fs.paths) == 14 and str(bad) not in fs.paths and fs.features.shape[0] == 14
    assert json.loads(fs.attrs["skipped_paths"]) == [str(bad)]


def test_torchvision_decoding_gives_the_pil_paths_store(tmp_path, image_folder, tiny_checkpoint):
    """extract.decode: torchvision (nvjpeg on CUDA; torchvision's CPU decoder here) reads these lossless PNGs without
    a resize to the same inputs as PIL, so the stores agree to float rounding, and an unreadable file is skipped the
    same way."""
    (image_folder / "b" / "002.png").write_bytes(b"junk")
    stores = {}
    for decode in ("pil", "torchvision"):
        stores[decode] = tmp_path / f"{decode}.h5"
        assert extract(tmp_path, image_folder, tiny_checkpoint, stores[decode], skip_corrupt=True, decode=decode) == 0
    pil, tv = (load_feature_set(stores[d], "layer2") for d in ("pil", "torchvision"))
    assert tv.paths == pil.paths and len(pil.paths) == 14
    assert json.loads(tv.attrs["skipped_paths"]) == json.loads(pil.attrs["skipped_paths"])
    np.testing.assert_allclose(tv.features, pil.features, rtol=1e-5, atol=1e-6)
    with open_store(stores["pil"]) as a, open_store(stores["torchvision"]) as b:
        np.testing.assert_allclose(b["logits"][:], a["logits"][:], rtol=1e-5, atol=1e-6)


def test_wrong_layer_fails_before_writing(tmp_path, image_folder, tiny_checkpoint, capsys):
    out = tmp_path / "store.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, out, layers=["layer5"]) == 1
    assert "['layer5'] not in SmallResNet; valid names" in capsys.readouterr().err
    assert not out.exists()


def test_incomplete_store_is_refused(tmp_path):
    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(IncompleteFileError, match="half.h5 is incomplete"):
        open_store(path)
    path.write_bytes(b"not hdf5")
    with pytest.raises(IncompleteFileError, match="half.h5 is not a readable HDF5 file"):
        open_store(path)


@pytest.mark.parametrize("fail_at", [1, 3])  # a middle batch; the last one (its error surfaces when the run ends)
def test_writer_thread_error_aborts_the_store_and_a_rerun_resumes(tmp_path, image_folder, tiny_checkpoint,
                                                                    monkeypatch, fail_at):
    whole, out = tmp_path / "whole.h5", tmp_path / "store.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, whole) == 0
    put, threads = Batches.put, []

    def failing(self, j, *args, **kw):
        threads.append(threading.current_thread().name)
        if j == fail_at:
            raise OSError("disk full (test)")
        return put(self, j, *args, **kw)

    monkeypatch.setattr(Batches, "put", failing)
    with pytest.raises(OSError, match=r"disk full \(test\)"):  # the writer thread's own error, in the caller
        extract(tmp_path, image_folder, tiny_checkpoint, out)
    assert set(threads) == {"peekflow-store-writer"} and len(threads) == fail_at + 1  # no write after the error
    assert not out.exists()
    assert sorted(p.name for p in partial_path(out).glob("batch_*.h5")) == [f"batch_{j}.h5" for j in range(fail_at)]
    monkeypatch.setattr(Batches, "put", put)
    assert extract(tmp_path, image_folder, tiny_checkpoint, out) == 0
    assert_same_store(whole, out, maps=False)
    assert not partial_path(out).exists()


def test_channels_last_changes_values_by_rounding_only_and_restores_the_model(tmp_path, image_folder, tiny_checkpoint):
    model, _ = load_model(tiny_checkpoint, "small_resnet", 3)
    prep, stores = Preprocessing(**TINY_MODEL["preprocessing"]), {}
    for cl in (False, True):
        stores[cl] = tmp_path / f"cl{cl}.h5"
        settings = ExtractSettings(layers=LAYERS, batch_size=4, maps=["layer2"], channels_last=cl)
        extract_features(model, image_folder, ["a", "b", "c"], prep, settings, torch.device("cpu"), stores[cl], {})
        assert all(p.is_contiguous() for p in model.parameters())  # NCHW again
    with open_store(stores[False]) as a, open_store(stores[True]) as b:
        for key in ["logits", *(f"{g}/{n}" for g in ("features", "maxact") for n in LAYERS)]:
            np.testing.assert_allclose(b[key][:], a[key][:], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b["maps/layer2"][:], a["maps/layer2"][:], rtol=1e-3, atol=1e-3)  # float16

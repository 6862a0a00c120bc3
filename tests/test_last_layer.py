import json

import numpy as np
import torch
from torch import nn

from peekflow.features.last_layer import find_last_layer
from peekflow.features.store import load_feature_set, open_store
from peekflow.models.checkpoint import load_model

from test_extract import extract


def test_store_records_the_verified_last_layer(tmp_path, image_folder, tiny_checkpoint):
    out = tmp_path / "store.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, out) == 0
    model, _ = load_model(tiny_checkpoint, "small_resnet", 3)
    fs = load_feature_set(out, "layer4")
    last = fs.last_layer
    assert (last.module, last.input) == ("fc", "layer4")
    np.testing.assert_array_equal(last.weight, model.fc.weight.detach().numpy())
    np.testing.assert_allclose(last.logits(fs.features), fs.logits, rtol=1e-5, atol=1e-5)
    assert load_feature_set(out, "layer2").last_layer is None  # W, b map layer4's features, not layer2's
    with open_store(out) as h5:
        assert "last_layer" not in json.dumps({k: str(v) for k, v in h5.attrs.items()})  # file attrs unchanged


class _NonlinearHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).relu() * 2


def test_a_head_that_does_not_reproduce_the_logits_is_not_recorded(caplog):
    torch.manual_seed(0)
    model, x = _NonlinearHead(), torch.randn(8, 4)
    assert find_last_layer(model, {"x": x}, model(x)) is None
    assert "last layer not recorded" in caplog.text and "fc on x" in caplog.text
    found = find_last_layer(model.fc, {"x": x}, model.fc(x))
    assert found is not None and found.input == "x"


def test_preflight_names_method_and_store_without_last_layer(tmp_path, monkeypatch):
    from peekflow.features.store import StoreWriter
    from peekflow.workflow.preflight import last_layer_problems
    from peekflow.workflow.replicas import expand
    from workflow import tiny_config

    config = tiny_config()
    config["ood"]["methods"] = {"msp": {}, "react": {"percentile": [85, 90]}}
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "results/features/tiny_resnet/textures.h5"
    writer = StoreWriter(store, 2, 3, {"layer4": 4}, {})
    writer.write(0, np.zeros((2, 3)), [-1, -1], ["a", "b"], {"layer4": np.zeros((2, 4))}, {"layer4": np.zeros((2, 4))})
    writer.finish()
    problems = last_layer_problems(expand(config))
    assert len(problems) == 1 and problems[0].startswith("ood.methods.react: feature store results/features/"
                                                         "tiny_resnet/textures.h5 records no last layer")
    assert "snakemake -R extract_features" in problems[0]


def test_peekflow_score_runs_last_layer_methods_on_extracted_stores(tmp_path, image_folder, tiny_checkpoint):
    import h5py

    from conftest import write_folder
    from peekflow.cli import main

    train, other = tmp_path / "train.h5", tmp_path / "other.h5"
    assert extract(tmp_path, image_folder, tiny_checkpoint, train) == 0
    assert extract(tmp_path, write_folder(tmp_path / "ood", ["zebra", "b"], per_class=3, seed=1), tiny_checkpoint,
                   other) == 0
    for method in ["vim", "react", "dice", "fdbd", "ash_s"]:  # an untrained model: SHE would find no right row
        out = tmp_path / f"{method}.h5"
        assert main(["score", "--method", method, "--layer", "layer4", "--fit-store", str(train),
                     "--eval", f"other={other}", "--out", str(out)]) == 0
        with h5py.File(out) as h5:
            assert h5["other"].shape == (6,) and np.isfinite(h5["other"][:]).all()

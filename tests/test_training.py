import json

import torch

from peekflow.cli import main
from peekflow.models.checkpoint import read_checkpoint

from conftest import TINY_MODEL, write_folder


def train(tmp_path, tag, **settings):
    train_dir = write_folder(tmp_path / "train", ["a", "b", "c"], per_class=16, seed=1)
    val_dir = write_folder(tmp_path / "val", ["a", "b", "c"], per_class=8, seed=2)
    settings = {"epochs": 3, "batch_size": 8, "lr": 0.05, "seed": 3, **settings}
    ckpt, metrics = tmp_path / f"{tag}.pt", tmp_path / f"{tag}.json"
    rc = main(["train", "--model", json.dumps(TINY_MODEL), "--train-images", str(train_dir), "--val-images",
               str(val_dir), "--settings", json.dumps(settings), "--device", "cpu", "--out-checkpoint", str(ckpt),
               "--out-metrics", str(metrics)])
    assert rc == 0
    return read_checkpoint(ckpt), json.loads(metrics.read_text())


def test_training_learns_and_is_deterministic(tmp_path):
    ckpt1, metrics = train(tmp_path, "one")
    ckpt2, _ = train(tmp_path, "two")
    # class c has one bright channel: learnable in three epochs
    assert metrics["val_accuracy"] >= 0.9 and metrics["classes"] == ["a", "b", "c"]
    assert len(metrics["history"]) == 3
    for key, value in ckpt1["state_dict"].items():
        assert torch.equal(value, ckpt2["state_dict"][key]), key
    assert ckpt1["classes"] == ["a", "b", "c"] and ckpt1["preprocessing"] == TINY_MODEL["preprocessing"]


def test_learning_rate_takes_effect(tmp_path):
    zero, _ = train(tmp_path, "zero", lr=0.0, weight_decay=0.0)
    torch.manual_seed(3)
    from peekflow.models.registry import build_model

    init = build_model("small_resnet", 3, **TINY_MODEL["arch_kwargs"]).state_dict()
    for key, value in init.items():
        if "running" not in key and "num_batches" not in key:  # BN statistics move without gradients
            assert torch.equal(zero["state_dict"][key], value), key


def test_unknown_setting_is_named(tmp_path, capsys):
    rc = main(["train", "--model", json.dumps(TINY_MODEL), "--train-images", "x", "--val-images", "y",
               "--settings", '{"epochs": 1, "learning_rate": 0.1}', "--out-checkpoint", "a", "--out-metrics", "b"])
    assert rc == 1 and "--settings.learning_rate: unknown key" in capsys.readouterr().err


def test_class_order_seed_permutes_output_units(tmp_path):
    from peekflow.models.spec import ModelSpec, load_spec
    from peekflow.prototypes.quality import predict
    from peekflow.models.training import derangement

    ckpt, metrics = train(tmp_path, "perm", class_order_seed=5)
    perm = derangement(3, 5)
    assert sorted(perm) == [0, 1, 2] and all(p != i for i, p in enumerate(perm))
    assert ckpt["classes"] == [["a", "b", "c"][i] for i in perm] == metrics["classes"]
    assert metrics["val_accuracy"] >= 0.9  # labels followed the permutation
    # an image of class c (bright in channel 2) lands on the unit the checkpoint names "c"
    model, classes = load_spec(ModelSpec(**{**TINY_MODEL, "name": "t"}), tmp_path / "perm.pt")
    bright = torch.full((1, 3, 32, 32), 0.25)
    bright[:, 2] = 0.75
    probs = predict(model, bright.numpy(), ModelSpec(**{**TINY_MODEL, "name": "t"}).preprocess(), "cpu")
    assert classes[probs.argmax()] == "c"


def test_derangement_has_no_fixed_points_and_is_seeded():
    from peekflow.models.training import derangement

    for n in (2, 3, 10, 50):
        for seed in range(5):
            perm = derangement(n, seed)
            assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
            assert perm == derangement(n, seed)
    assert derangement(10, 0) != derangement(10, 1)

"""peekflow.workflow.requests without Snakemake: each rule's work grows with the counts, sizes and settings of the
config, and becomes the request of peekflow.workflow.resources (tests/test_resources.py: what the dry runs plan)."""

from types import SimpleNamespace as W

import pytest

from peekflow.workflow import replicas, resources
from peekflow.workflow.requests import _ESTIMATES, Requests, Work
from test_config_checks import validated
from test_slurm import rule_blocks, runs_a_network
from workflow import tiny_config

TARGET = "tiny_resnet"  # widths [8, 8, 16, 16], 32 px images of 3 classes; shapes_train: 24 per class


def requests(edit=None, **top) -> Requests:
    """Requests of the tiny config (validated and expanded as the Snakefile does), after `edit(config)`."""
    config = tiny_config() | top
    if edit:
        edit(config)
    config = validated(config)
    replicas.expand(config)
    return Requests(config)


def test_extraction_asks_the_forward_passes_of_its_images_and_a_shard_its_share():
    r = requests()
    work = r.work("extract_features", W(model=TARGET, dataset="shapes_train"), [])
    assert work == Work(*resources.forward(72, 32, 32), network=True, workers=0)
    assert r.work("extract_feature_shard", W(model=TARGET, dataset="shapes_train", shard="0", shards="3"), []) == \
        Work(*resources.forward(24, 32, 32), network=True, workers=0)
    job = W(model=TARGET, dataset="shapes_train")
    assert r.request("extract_features", job, [], threads=2) == resources.request(*resources.forward(72, 32, 32),
                                                                                  threads=2)
    on_gpu = requests(device="cuda").request("extract_features", job, [], threads=2)
    assert on_gpu == resources.request(*resources.forward(72, 32, 32), threads=2, gpu=True)


def test_training_reads_its_settings():
    work = requests().work("train_model", W(model=TARGET), [])
    assert work == Work(*resources.training(72, 2, 32, 16), network=True, workers=0)  # epochs 2, batch_size 16


def test_prototypes_are_sized_by_their_method_block():
    r = requests()
    # deepdream: per_class 1 x 3 classes, 5 steps of 32 px in batches of (the default) 64
    assert r.work("synthesize_prototypes", W(model=TARGET, proto="deepdream"), []) == \
        Work(*resources.synthesis(3, 5, 32, 64), network=True)
    assert r.work("synthesize_prototype_shard", W(model=TARGET, proto="deepdream", shard="1", shards="2"), []) == \
        Work(*resources.synthesis(2, 5, 32, 64), network=True)
    # caricatures: their class's own default batch (32), not another method's
    assert r.work("synthesize_caricature_shard", W(model=TARGET, shard="0", shards="1"), []) == \
        Work(*resources.synthesis(3, 5, 32, 32), network=True)


def test_scoring_grows_with_the_bank_and_runs_the_network_only_for_odin():
    r = requests()
    job = {"model": TARGET, "dataset": "novel_shapes"}  # 2 classes x 8 images
    msp, knn, odin = (r.work("score_ood", W(method=m, **job), []) for m in ("msp", "knn", "odin"))
    assert msp == Work(*resources.scoring(0, 16, 16, 3))  # layer4: 16 channels
    assert knn == Work(*resources.scoring(72, 16, 16, 3, pairwise=True), network=True)  # the bank: shapes_train
    assert odin == Work(*resources.forward(16, 32, 32, 3), network=True)
    assert r.work("score_ood", W(method="knn_deepinversion", **job), []).seconds < knn.seconds  # 3 prototypes


def test_layer_channels_come_from_the_built_architecture():
    r = requests()
    assert (r.layer_channels(TARGET, "layer3"), r.layer_channels(TARGET, "layer4")) == (16, 16)
    assert r.layer_channels("tiny_vgg", "block4") == 16


def test_a_rule_without_an_estimate_reads_its_inputs(tmp_path):
    big = tmp_path / "scores.h5"
    big.write_bytes(b"\0" * 3_000_000)
    assert requests().work("make_ood_table", W(), [str(big), str(tmp_path / "missing.h5")]) == \
        Work(*resources.files(3.0))


def test_every_rule_that_runs_a_network_has_an_estimate():
    network = {rule for rule, block in rule_blocks().items() if runs_a_network(block)}
    assert network and network <= set(_ESTIMATES)


@pytest.mark.parametrize("rule", sorted(_ESTIMATES))
def test_every_estimate_names_a_rule(rule):
    assert rule in rule_blocks()

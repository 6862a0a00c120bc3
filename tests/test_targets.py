"""What `rule all` asks for (peekflow.workflow.targets): every configured stage's outputs, nothing of an absent
stage."""

from test_config_checks import validated

from peekflow.workflow import replicas, targets
from workflow import tiny_config


def test_tiny_config_asks_for_every_stage():
    config = replicas.expand(validated(tiny_config()))
    out = targets.all_outputs(config)
    assert len(out) == len(set(out))
    methods = list(config["ood"]["methods"])
    assert {p for p in out if p.startswith("results/ood/")} == {
        f"results/ood/tiny_resnet/figures/{m}_{kind}.png" for m in methods for kind in ("roc", "hist")}
    assert {"results/ood_table.csv", "results/ood_table.md", "results/models/tiny_resnet/metrics.json",
            "results/models/tiny_vgg/metrics.json", "results/prototypes/tiny_resnet/caricature_quality.json",
            "results/probing/tiny_resnet/tiny_vgg/probing.json", "results/neurons/tiny_resnet/layer4/invert.csv",
            "results/neurons/tiny_resnet/layer4/dora.png", "results/neurons/tiny_resnet/layer3/patches",
            "results/emergence/tiny_resnet/trajectory.h5"} <= set(out)
    assert len([p for p in out if p.startswith("results/prototypes/")]) == 3 * 3  # 3 methods x h5, png, quality
    assert len([p for p in out if p.startswith("results/emergence/")]) == 2 * 2 + 3 + 2


def test_absent_sections_ask_for_nothing():
    config = tiny_config()
    for section in ("prototypes", "probing", "labels", "neurons", "emergence"):
        config.pop(section)
    for method in ("knn_deepinversion", "knn_deepdream"):
        config["ood"]["methods"].pop(method)
    out = targets.all_outputs(replicas.expand(validated(config)))
    assert not [p for p in out if not p.startswith(("results/ood", "results/models/"))], out

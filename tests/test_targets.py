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
    for section in ("prototypes", "probing", "labels", "neurons", "emergence", "semantics"):
        config.pop(section)
    for method in ("knn_deepinversion", "knn_deepdream"):
        config["ood"]["methods"].pop(method)
    out = targets.all_outputs(replicas.expand(validated(config)))
    assert not [p for p in out if not p.startswith(("results/ood", "results/models/"))], out


def semantics_config(**edits) -> dict:
    config = tiny_config()
    config["semantics"] = {"synsets": {"circle": "circle.n.01", "square": "square.n.01", "triangle": "triangle.n.01"}}
    config.update(edits)
    return config


def test_semantics_asks_for_the_classes_of_target_and_probe_and_judges_probing_and_dora():
    out = targets.all_outputs(replicas.expand(validated(semantics_config())))
    assert len(out) == len(set(out))
    semantic = {p for p in out if "semantic" in p or "wordnet" in p or "/fc/" in p}
    assert semantic == {
        *(f"results/semantics/{m}/{f}" for m in ("tiny_resnet", "tiny_vgg") for f in targets.SEMANTICS),
        "results/probing/tiny_resnet/tiny_vgg/semantics.json", "results/probing/tiny_resnet/tiny_vgg/semantics.png",
        "results/neurons/tiny_resnet/fc/dora.csv", "results/neurons/tiny_resnet/fc/dora.png",
        "results/neurons/tiny_resnet/fc/dora_wordnet.json", "results/semantics_summary.csv",
        "results/semantics_summary.md", "results/semantic_depths_summary.csv", "results/semantic_depths_summary.md"}
    config = replicas.expand(validated(semantics_config()))
    assert targets.atlas_layers(config, "tiny_resnet")["fc"] == {
        "dora": "results/neurons/tiny_resnet/fc/dora.csv", "dora_figure": "results/neurons/tiny_resnet/fc/dora.png",
        "dora_signals": "results/neurons/tiny_resnet/fc/dora_signals.h5",
        "dora_wordnet": "results/neurons/tiny_resnet/fc/dora_wordnet.json"}
    assert targets.summary_reports(config, "semantics") == {
        "tiny_resnet/probing:tiny_vgg": "results/probing/tiny_resnet/tiny_vgg/semantics.json",
        "tiny_resnet/dora:fc": "results/neurons/tiny_resnet/fc/dora_wordnet.json"}


def test_semantics_without_probing_or_dora_maps_the_classes_only():
    config = semantics_config()
    for section in ("probing", "labels"):
        config.pop(section)
    out = targets.all_outputs(replicas.expand(validated(config)))
    assert {p for p in out if "semantic" in p or "wordnet" in p or "/fc/" in p} == {
        f"results/semantics/{m}/{f}" for m in ("tiny_resnet", "tiny_vgg") for f in targets.SEMANTICS}


def test_a_config_without_semantics_asks_for_none_of_it():
    config = semantics_config()
    config.pop("semantics")
    config = replicas.expand(validated(config))
    out = targets.all_outputs(config)
    assert not [p for p in out if "semantic" in p or "wordnet" in p or "/fc/" in p]
    assert "fc" not in targets.atlas_layers(config, "tiny_resnet")

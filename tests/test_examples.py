"""The example configs for one's own data (config/examples/*.yaml, shown in docs/real-data.md) run as written, end to
end: on tiny image folders where their paths point (relative to the working directory) and random weights saved as a
user saves them (a torchvision state dict with torch.save, a timm model's with safetensors). An overlay config only
shrinks sizes -- classes, steps, channels, k -- so that each run takes about a minute on two cores; the examples
themselves keep realistic settings. Afterwards the outputs of every stage asked for exist and a second dry run has
nothing to do."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import write_folder
from peekflow.models.registry import build_model
from workflow import ROOT, snakemake, write_config

EXAMPLES = ROOT / "config" / "examples"
CLASSES = ["cat", "dog", "fox"]
SMALL_RENDER = {"size": 32, "per_class": 1, "steps": 2}
VITAL = {"channels": "0:1", "steps": 2, "batch_size": 1, "references": 1}
OVERLAYS = {  # example -> what the overlay shrinks (one neuron layer: the other's jobs are the same kind)
    "own_resnet": {
        "models": {"mine": {"num_classes": 3, "preprocessing": {"resize": 36, "crop": 32}},
                   "probe": {"num_classes": 3, "preprocessing": {"resize": 32},
                             "train": {"settings": {"epochs": 1, "batch_size": 6}}}},
        "neurons": {"layers": ["layer4"], "topn": 2, "patches": {"channels": "0:2", "k": 1}, "vital": VITAL},
        "prototypes": {"methods": {"deepdream": SMALL_RENDER, "deepinversion": SMALL_RENDER}},
        "ood": {"methods": {"knn": {"k": 2}, "knn_deepinversion": {"k": 1}}, "table": {"n_bootstrap": 10}},
    },
    "own_vit": {
        "models": {"mine_vit": {"num_classes": 3},
                   "probe": {"num_classes": 3, "train": {"settings": {"epochs": 1, "batch_size": 6}}}},
        "neurons": {"layers": ["blocks.3"], "topn": 2, "patches": {"channels": "0:2", "k": 1}, "vital": VITAL},
        "prototypes": {"methods": {"deepdream": SMALL_RENDER}},
        "ood": {"methods": {"knn": {"k": 2}, "vim": {"dim": 4}, "knn_deepdream": {"k": 1}},
               "table": {"n_bootstrap": 10}},
    },
}


PROBED = {"own_vit"}  # probing runs in one of them: both probe with a small_resnet trained here (CI time)


def merged(base: dict, overlay: dict) -> dict:
    """`base` updated by `overlay` key by key, as Snakemake combines config files."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def user_files(work, config: dict) -> None:
    """The folders the example points at (tiny PNGs: 4 training, 2 test images per class, 4 OOD images) and the
    target's weights: a random initialisation, saved as a user saves their trained model."""
    write_folder(work / "data" / "train", CLASSES, per_class=4, seed=0)
    write_folder(work / "data" / "val", CLASSES, per_class=2, seed=1)
    write_folder(work / "data" / "ood", ["unknown"], per_class=4, seed=2)
    target = config["models"][config["target_model"]]
    torch.manual_seed(0)
    model = build_model(target["arch"], target["num_classes"], **target.get("arch_kwargs", {}))
    path = work / target["checkpoint"]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)


def targets(config: dict, probing: bool) -> list[str]:
    """Features, top-N and patches of every neuron layer, VITAL, the OOD table (its data-free KNN on prototypes), and
    with `probing` PEEK probing."""
    model, probe = config["target_model"], config["probe_model"]
    layers = config["neurons"].get("layers") or config["models"][model]["layers"]
    neurons = [f"results/neurons/{model}/{layer}/{out}" for layer in layers for out in ("topn.h5", "patches")]
    vital = [f"results/neurons/{model}/{layer}/vital.h5" for layer in config["neurons"]["vital"]["layers"]]
    probed = [f"results/probing/{model}/{probe}/probing.json"] if probing else []
    return ["results/ood_table.csv", *probed, *neurons, *vital]


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def example_run(request, tmp_path_factory):
    """(working directory, the example's config with the overlay, the targets) after a run of the example."""
    name = request.param
    work = tmp_path_factory.mktemp(name)
    example = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    config = merged(example, OVERLAYS[name])
    user_files(work, config)
    overlay = write_config(work, OVERLAYS[name], "small.yaml")
    wanted = targets(config, name in PROBED)
    # --configfile <example> <overlay> -- <targets>: the overlay's keys override the example's
    result = snakemake(work, str(overlay), "--cores", "2", "--", *wanted, config=EXAMPLES / f"{name}.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    return work, config, wanted


def test_the_example_runs_end_to_end(example_run):
    work, config, wanted = example_run
    assert all((work / path).exists() for path in wanted), [p for p in wanted if not (work / p).exists()]
    table = (work / "results" / "ood_table.csv").read_text()
    assert all(method in table for method in config["ood"]["methods"])
    assert not list((work / "results").glob("**/*.partial"))


def test_a_second_dry_run_has_nothing_to_do(example_run):
    work, config, wanted = example_run
    name = config["target_model"]
    example = next(n for n in OVERLAYS if config["target_model"] in OVERLAYS[n]["models"])
    result = snakemake(work, str(work / "small.yaml"), "-n", "--", *wanted, config=EXAMPLES / f"{example}.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr, (name, result.stdout[-3000:])

"""What `rule all` asks for, from a validated workflow config: every output of each configured stage of the target
model (a stage whose section is absent asks for nothing). Paths follow ../shared/DESIGN.md's layout."""

from __future__ import annotations

from peekflow.config_checks import neuron_layers, ood_runs


def _paths(pattern: str, **values: list) -> list[str]:
    """`pattern` formatted with every combination of `values` (Snakemake's expand, in its order)."""
    out = [pattern]
    for key, options in values.items():
        out = [p.replace("{" + key + "}", str(v)) for p in out for v in options]
    return out


def trained_models(config: dict) -> list[str]:
    return sorted(m for m, spec in config["models"].items() if "train" in spec)


def ood_outputs(config: dict) -> list[str]:
    """The OOD table and the ROC curve and score histogram of every OOD method on the target model."""
    figures = _paths("results/ood/{model}/figures/{method}_{kind}.png", model=[config["target_model"]],
                     method=list(ood_runs(config)), kind=["roc", "hist"])
    return ["results/ood_table.csv", "results/ood_table.md", *figures]


def prototype_outputs(config: dict) -> list[str]:
    methods = sorted(config.get("prototypes", {}).get("methods", {}))
    return _paths("results/prototypes/{model}/{proto}{suffix}", model=[config["target_model"]], proto=methods,
                  suffix=[".h5", ".png", "_quality.json"])


def probing_outputs(config: dict) -> list[str]:
    if "probing" not in config:
        return []
    return _paths("results/probing/{model}/{probe}/{name}", model=[config["target_model"]],
                  probe=[config["probe_model"]], name=["similarity.csv", "similarity.png", "probing.json"])


def label_outputs(config: dict) -> list[str]:
    labels = config.get("labels")
    if not labels:
        return []
    return _paths("results/neurons/{model}/{layer}/{method}.{ext}", model=[config["target_model"]],
                  layer=labels["layers"], method=[m for m in ("dora", "invert") if m in labels], ext=["csv", "png"])


def neuron_outputs(config: dict) -> list[str]:
    if "neurons" not in config:
        return []
    return _paths("results/neurons/{model}/{layer}/{out}", model=[config["target_model"]],
                  layer=neuron_layers(config), out=["topn.h5", "patches"])


def emergence_outputs(config: dict) -> list[str]:
    """Per-layer files and figures, the knowledge-point curve, the PGD trajectory."""
    if "emergence" not in config:
        return []
    names = [f"{layer}.{ext}" for layer in config["emergence"]["layers"] for ext in ("h5", "png")]
    names += [f"knowledge_points.{ext}" for ext in ("csv", "json", "png")] + ["trajectory.h5", "trajectory.png"]
    return _paths("results/emergence/{model}/{name}", model=[config["target_model"]], name=names)


def all_outputs(config: dict) -> list[str]:
    """Everything `rule all` asks for."""
    models = _paths("results/models/{model}/metrics.json", model=trained_models(config))
    return [*ood_outputs(config), *models, *prototype_outputs(config), *probing_outputs(config),
            *label_outputs(config), *neuron_outputs(config), *emergence_outputs(config)]

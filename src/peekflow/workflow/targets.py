"""What `rule all` asks for, from a validated, expanded workflow config (peekflow.workflow.replicas): every output of
each configured stage for every target model (a stage whose section is absent asks for nothing), and the summaries
over replicas. Paths follow ../shared/DESIGN.md's layout."""

from __future__ import annotations

from peekflow.workflow.config_checks import neuron_layers, ood_runs


TABLES = {"ood": ["results/ood_table.csv", "results/ood_table.md"]}
COMPARISON = ["results/paper_comparison.csv", "results/paper_comparison.md"]  # ood.compare: beside published tables
SUMMARIES = {stage: [f"results/{stage}_summary.csv", f"results/{stage}_summary.md"]
             for stage in ("ood", "prototypes", "probing", "semantics", "semantic_depths")}
SEMANTICS = ["synsets.csv", "distance.csv", "wup.csv", "lcs_depth.csv", "matrices.png"]  # results/semantics/<model>/


def feature_store(model: str, dataset: str) -> str:
    """The feature store of `dataset` under `model` (values or wildcard patterns)."""
    return f"results/features/{model}/{dataset}.h5"


def _paths(pattern: str, **values: list) -> list[str]:
    """`pattern` formatted with every combination of `values` (Snakemake's expand, in its order)."""
    out = [pattern]
    for key, options in values.items():
        out = [p.replace("{" + key + "}", str(v)) for p in out for v in options]
    return out


def trained_models(config: dict) -> list[str]:
    return sorted(m for m, spec in config["models"].items() if "train" in spec)


def ood_outputs(config: dict) -> list[str]:
    """The OOD table (and its comparison with published tables, where ood.compare asks for one) and the ROC curve and
    score histogram of every OOD method on the target model."""
    figures = _paths("results/ood/{model}/figures/{method}_{kind}.png", model=config["target_models"],
                     method=list(ood_runs(config)), kind=["roc", "hist"])
    return [*TABLES["ood"], *(COMPARISON if config["ood"].get("compare") else []), *figures]


def prototype_outputs(config: dict) -> list[str]:
    methods = sorted(config.get("prototypes", {}).get("methods", {}))
    return _paths("results/prototypes/{model}/{proto}{suffix}", model=config["target_models"], proto=methods,
                  suffix=[".h5", ".png", "_quality.json"])


def probing_outputs(config: dict) -> list[str]:
    if "probing" not in config:
        return []
    return _paths("results/probing/{model}/{probe}/{name}", model=config["target_models"],
                  probe=[config["probe_model"]], name=["similarity.csv", "similarity.png", "probing.json"])


def label_outputs(config: dict) -> list[str]:
    labels = config.get("labels")
    if not labels:
        return []
    out = _paths("results/neurons/{model}/{layer}/{method}.{ext}", model=config["target_models"],
                 layer=labels["layers"], method=[m for m in ("dora", "invert") if m in labels], ext=["csv", "png"])
    layer = dora_output_layer(config)
    if layer:  # DORA of the output layer, judged against WordNet
        more = _paths("results/neurons/{model}/{layer}/{name}", model=config["target_models"], layer=[layer],
                      name=["dora.csv", "dora.png", "dora_wordnet.json"])
        out += [path for path in more if path not in out]
    return out


def semantic_models(config: dict) -> list[str]:
    """The models whose classes are mapped to WordNet (semantics): every target and the probe."""
    if "semantics" not in config:
        return []
    return list(dict.fromkeys([*config["target_models"], *([config["probe_model"]] if "probe_model" in config
                                                            else [])]))


def dora_output_layer(config: dict) -> str | None:
    """The target's output layer, where DORA's units are judged against WordNet (semantics and labels.dora)."""
    if "semantics" in config and "dora" in (config.get("labels") or {}):
        return config["semantics"]["output_layer"]
    return None


def semantics_outputs(config: dict) -> list[str]:
    """Each semantic model's class -> synset table, matrices and figure; probing judged against WordNet."""
    out = _paths("results/semantics/{model}/{name}", model=semantic_models(config), name=SEMANTICS)
    if "semantics" in config and "probing" in config:
        out += _paths("results/probing/{model}/{probe}/{name}", model=config["target_models"],
                      probe=[config["probe_model"]], name=["semantics.json", "semantics.png"])
    return out


def neuron_outputs(config: dict) -> list[str]:
    if "neurons" not in config:
        return []
    return [path for model in config["target_models"]
            for path in _paths("results/neurons/{model}/{layer}/{out}", model=[model],
                               layer=neuron_layers(config, model), out=["topn.h5", "patches"])]


def vital_layers(config: dict) -> list[str]:
    return (config.get("neurons", {}).get("vital") or {}).get("layers", [])


def vital_outputs(config: dict) -> list[str]:
    """VITAL's file and grid per configured layer of each target (neurons.vital)."""
    return _paths("results/neurons/{model}/{layer}/vital.{ext}", model=config["target_models"],
                  layer=vital_layers(config), ext=["h5", "png"])


def atlas_layers(config: dict, model: str) -> dict[str, dict[str, str]]:
    """Layer -> the files the neuron atlas of `model` shows: every neuron layer's top-N and patches, and on layers
    that are also labelled, DORA's table and figure and INVERT's table, and VITAL's file where configured (`peekflow
    atlas --layers`)."""
    labels = config.get("labels") or {}
    out = {}
    for layer in neuron_layers(config, model):
        stem = f"results/neurons/{model}/{layer}"
        files = {"topn": f"{stem}/topn.h5", "patches": f"{stem}/patches"}
        if layer in labels.get("layers", []):
            if "dora" in labels:
                files.update(dora=f"{stem}/dora.csv", dora_figure=f"{stem}/dora.png",
                             dora_signals=f"{stem}/dora_signals.h5")
            if "invert" in labels:
                files["invert"] = f"{stem}/invert.csv"
        if layer in vital_layers(config):
            files["vital"] = f"{stem}/vital.h5"
        out[layer] = files
    layer = dora_output_layer(config)
    if layer:  # the output layer's page: DORA's units and their Mantel test against WordNet (no top-N, no patches)
        stem = f"results/neurons/{model}/{layer}"
        out.setdefault(layer, {}).update(dora=f"{stem}/dora.csv", dora_figure=f"{stem}/dora.png",
                                         dora_signals=f"{stem}/dora_signals.h5",
                                         dora_wordnet=f"{stem}/dora_wordnet.json")
    return out


def atlas_outputs(config: dict) -> list[str]:
    """The neuron atlas of each target (a folder: index.html, a page per neuron), when neurons are configured."""
    return _paths("results/atlas/{model}", model=config["target_models"]) if "neurons" in config else []


def emergence_outputs(config: dict) -> list[str]:
    """Per-layer files and figures, the knowledge-point curve, the PGD trajectory."""
    if "emergence" not in config:
        return []
    names = [f"{layer}.{ext}" for layer in config["emergence"]["layers"] for ext in ("h5", "png")]
    names += [f"knowledge_points.{ext}" for ext in ("csv", "json", "png")] + ["trajectory.h5", "trajectory.png"]
    return _paths("results/emergence/{model}/{name}", model=config["target_models"], name=names)


def summary_reports(config: dict, stage: str) -> dict[str, str]:
    """`<replica>/<what>` -> the per-replica JSON reports a summary reads: prototype quality per method, probing;
    semantics: probing's (`probing:<probe>`) and DORA's output units' (`dora:<layer>`) judgement against WordNet,
    semantic_depths: probing's alone (its accuracy by depth)."""
    targets = config["target_models"]
    if stage == "prototypes":
        methods = sorted(config.get("prototypes", {}).get("methods", {}))
        return {f"{m}/{p}": f"results/prototypes/{m}/{p}_quality.json" for m in targets for p in methods}
    if stage in ("semantics", "semantic_depths"):
        probing = {f"{m}/probing:{p}": f"results/probing/{m}/{p}/semantics.json" for m in targets
                   for p in ([config["probe_model"]] if "semantics" in config and "probing" in config else [])}
        layer = dora_output_layer(config) if stage == "semantics" else None
        return probing | {f"{m}/dora:{layer}": f"results/neurons/{m}/{layer}/dora_wordnet.json"
                          for m in (targets if layer else [])}
    return {f"{m}/{config['probe_model']}": f"results/probing/{m}/{config['probe_model']}/probing.json"
            for m in targets} if "probing" in config else {}


def summaries(config: dict) -> list[str]:
    """Mean and std over the replicas of each target (results/*_summary.csv, .md) of the configured stages."""
    stages = ["ood"] + ["prototypes"] * bool(prototype_outputs(config)) + ["probing"] * bool(probing_outputs(config))
    stages += [s for s in ("semantics", "semantic_depths") if summary_reports(config, s)]
    return [path for stage in stages for path in SUMMARIES[stage]]


def all_outputs(config: dict) -> list[str]:
    """Everything `rule all` asks for."""
    models = _paths("results/models/{model}/metrics.json", model=trained_models(config))
    return [*ood_outputs(config), *summaries(config), *models, *prototype_outputs(config), *probing_outputs(config),
            *label_outputs(config), *neuron_outputs(config), *vital_outputs(config), *atlas_outputs(config),
            *emergence_outputs(config), *semantics_outputs(config)]

# PEEK probing: the probe model names each output unit of the target from the target's prototypes.


rule probe_prototypes:
    input:
        prototypes=lambda w: prototype_file(w.model, config["probing"]["prototypes"]),
        probe_checkpoint=lambda w: model_checkpoint(w.probe),
        known_store=lambda w: feature_store(w.probe, config["probing"]["known"]),
    output:
        csv="results/probing/{model}/{probe}/similarity.csv",
        png=report(
            "results/probing/{model}/{probe}/similarity.png",
            caption="../report/similarity.rst",
            category="3. Probing",
            subcategory="{model}",
            labels={"probe": "{probe}"},
        ),
        json="results/probing/{model}/{probe}/probing.json",
    log:
        "logs/probing/{model}/{probe}.log",
    benchmark:
        "results/benchmarks/probe_prototypes/{model}/{probe}.tsv"
    wildcard_constraints:
        probe="|".join(config["models"]),
    threads: config["prototypes"]["threads"]
    resources:
        **job_resources("probe_prototypes"),
    params:
        probe_model=lambda w: model_spec(w.probe),
        layer=lambda w: model_config(w.probe)["penultimate"],
        settings=as_json(config.get("probing", {}).get("settings", {})),
        device=config["device"],
    shell:
        "peekflow probe --prototypes {input.prototypes} --probe-model {params.probe_model:q}"
        " --probe-checkpoint {input.probe_checkpoint:q} --layer {params.layer} --known-store {input.known_store}"
        " --settings {params.settings:q} --device {params.device} --threads {threads}"
        " --out-csv {output.csv} --out-png {output.png} --out-json {output.json} > {log} 2>&1"

# Emergence of intermediate visual patterns (Li, Wang, Zhang, NeurIPS 2021) in the target model: a feature store with
# the spatial maps of the analysed layers for the analysed subsample only (emergence.per_class images per class,
# chosen before extraction with emergence.seed, as the analysis would choose them), the per-layer analysis with its knowledge-point curve, and a PGD attack
# traced through the analysed layers.


rule extract_emergence_maps:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        images=lambda w: dataset_input(emergence_dataset()),
    output:
        store="results/emergence/{model}/maps.h5",
    log:
        "logs/emergence/{model}/maps.log",
    benchmark:
        "results/benchmarks/extract_emergence_maps/{model}.tsv"
    threads: config["extract"]["threads"]
    resources:
        **job_resources("extract_emergence_maps"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: extract_settings(w.model, emergence_layers(), maps=emergence_layers()),
        images=lambda w: dataset_images(emergence_dataset()),
        dataset=lambda w: emergence_dataset(),
        per_class=lambda w: config["emergence"]["per_class"],
        seed=lambda w: config["emergence"]["seed"],
    shell:
        "peekflow extract --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --images {params.images:q} --dataset-name {params.dataset:q} --settings {params.settings:q}"
        " --per-class {params.per_class} --sample-seed {params.seed}"
        " --threads {threads} --out {output.store} > {log} 2>&1"


rule analyse_emergence:
    input:
        store="results/emergence/{model}/maps.h5",
    output:
        files=expand("results/emergence/{{model}}/{layer}.h5", layer=emergence_layers()),
        figures=[
            report(
                f"results/emergence/{{model}}/{layer}.png",
                caption="../report/emergence_layer.rst",
                category="6. Emergence",
                subcategory="{model}",
                labels={"figure": f"{layer} embeddings"},
            )
            for layer in emergence_layers()
        ],
        csv="results/emergence/{model}/knowledge_points.csv",
        json="results/emergence/{model}/knowledge_points.json",
        curve=report(
            "results/emergence/{model}/knowledge_points.png",
            caption="../report/knowledge_points.rst",
            category="6. Emergence",
            subcategory="{model}",
            labels={"figure": "knowledge points per layer"},
        ),
    log:
        "logs/emergence/{model}/analysis.log",
    benchmark:
        "results/benchmarks/analyse_emergence/{model}.tsv"
    threads: config.get("emergence", {}).get("threads", 1)
    resources:
        **job_resources("analyse_emergence"),
    params:
        device=config["device"],
        layers=lambda w: " ".join(emergence_layers()),
        settings=lambda w: stage_settings("emergence"),
        out_dir=lambda w, output: output.csv.rsplit("/", 1)[0],
    shell:
        "peekflow emergence --store {input.store:q} --layers {params.layers} --settings {params.settings:q} --device {params.device}"
        " --threads {threads} --out-dir {params.out_dir:q} > {log} 2>&1"


rule trace_emergence_attack:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        files=expand("results/emergence/{{model}}/{layer}.h5", layer=emergence_layers()),
    output:
        trajectory="results/emergence/{model}/trajectory.h5",
        figure=report(
            "results/emergence/{model}/trajectory.png",
            caption="../report/trajectory.rst",
            category="6. Emergence",
            subcategory="{model}",
            labels={"figure": "PGD attack trajectory"},
        ),
    log:
        "logs/emergence/{model}/trajectory.log",
    benchmark:
        "results/benchmarks/trace_emergence_attack/{model}.tsv"
    threads: config.get("emergence", {}).get("threads", 1)
    resources:
        **job_resources("trace_emergence_attack"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings("emergence.trajectory"),
    shell:
        "peekflow emergence-trajectory --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --analysis {input.files:q} --settings {params.settings:q} --threads {threads}"
        " --out {output.trajectory} --figure {output.figure} > {log} 2>&1"

# Data-free KNN reference banks: the target model's features of its own prototypes (knn_deepinversion, knn_deepdream).


rule extract_prototype_features:
    input:
        prototypes=prototype_file("{model}", "{proto}"),
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        store=feature_store("{model}", "prototypes_{proto}"),
    log:
        "logs/features/{model}/prototypes_{proto}.log",
    benchmark:
        "results/benchmarks/extract_prototype_features/{model}/{proto}.tsv"
    threads: config["extract"]["threads"]
    resources:
        **job_resources("extract_prototype_features"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: extract_settings(w.model),
    shell:
        "peekflow extract --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --prototypes {input.prototypes} --dataset-name prototypes_{wildcards.proto}"
        " --settings {params.settings:q} --threads {threads} --out {output.store} > {log} 2>&1"
